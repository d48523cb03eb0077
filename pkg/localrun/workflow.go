package localrun

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// Workflow is a state machine of an app synthesized with a given
// configuration: its template (the state machine's definition is resolved
// by pkg/sfnlocal) and its function's bootstrap and environment.
type Workflow struct {
	// StateMachine is the state machine's logical ID ("" when the template
	// has one only).
	StateMachine string
	// TemplatePath is the synthesized template's file (TemplateEnv of the
	// app's other functions).
	TemplatePath string
	Template     []byte
	Bootstrap    string
	// Env is the function's environment from the template (TemplateEnv).
	Env []string
	// BackupEnv is the backup function's environment from the same
	// template: its policies that reboot in waves are handed to the
	// workflow (AMIBACKUP_WORKFLOW_ARN, resolved to StateMachineARN).
	BackupEnv []string
	// StateMachineName is the workflow's fixed name: give it to
	// sfnlocal.Options so $$.StateMachine.Id is the ARN the backup
	// function starts executions of.
	StateMachineName string
}

// Rollout is the reboot-wave workflow (PrepareRollout).
type Rollout = Workflow

// PrepareRollout runs `cdk synth -c amibackup:config=<cfgJSON>` (the real
// CLI; cfgJSON on one line) into work and builds the rollout bootstrap for
// this machine.
func PrepareRollout(ctx context.Context, root, work, cfgJSON string) (*Rollout, error) {
	return prepareWorkflow(ctx, root, work, cfgJSON, "rollout", "Rollout")
}

// prepareWorkflow synthesizes the app with cfgJSON into work/cdk.out.<fn>
// and builds the bootstrap of the workflow's function fn, whose logical ID
// starts with prefix.
func prepareWorkflow(ctx context.Context, root, work, cfgJSON, fn, prefix string) (*Rollout, error) {
	if _, err := exec.LookPath("cdk"); err != nil {
		return nil, errors.New("cdk CLI not on PATH: run `make tools` and use the Makefile targets")
	}
	path, err := SynthConfig(ctx, root, filepath.Join(work, "cdk.out."+fn), Stack, cfgJSON)
	if err != nil {
		return nil, err
	}
	r := &Rollout{TemplatePath: path}
	if r.Template, err = os.ReadFile(path); err != nil {
		return nil, err
	}
	if r.Env, err = TemplateEnv(path, prefix); err != nil {
		return nil, err
	}
	if fn == "rollout" {
		// The backup function hands the waves policies to this workflow.
		if r.BackupEnv, err = TemplateEnv(path, "Backup"); err != nil {
			return nil, err
		}
		if r.StateMachineName, err = StateMachineName(path); err != nil {
			return nil, err
		}
	}
	if r.Bootstrap, err = Build(ctx, root, work, runtime.GOARCH, fn); err != nil {
		return nil, err
	}
	return r, nil
}

// StartBackup starts a backup function (bootstrap: Prepared.BackupBin)
// under its own RIE with the harness's environment and fnEnv (e.g.
// Rollout.BackupEnv: the backup of a configuration with waves, which hands
// its triggers to the workflow). Close stops it.
func (h *Harness) StartBackup(ctx context.Context, rie, bootstrap string, fnEnv []string) (*Function, error) {
	f, err := Start(ctx, rie, "backup", bootstrap, h.Env(fnEnv))
	if err != nil {
		return nil, err
	}
	h.extra = append(h.extra, f)
	return f, nil
}

// StartRollout starts the rollout function under its own RIE with the
// harness's environment; Auto Scaling and ELBv2 reach the same emulator
// (AWS_ENDPOINT_URL_AUTO_SCALING, AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2),
// like Step Functions (AWS_ENDPOINT_URL_SFN, in every function's Env).
// Close stops it.
func (h *Harness) StartRollout(ctx context.Context, rie string, r *Rollout) (*Function, error) {
	env := append(h.Env(r.Env), "AWS_ENDPOINT_URL_AUTO_SCALING="+h.FunctionEndpoint, "AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2="+h.FunctionEndpoint)
	f, err := Start(ctx, rie, "rollout", r.Bootstrap, env)
	if err != nil {
		return nil, err
	}
	h.extra = append(h.extra, f)
	return f, nil
}
