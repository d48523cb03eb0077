package localrun

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/amibackup/amibackup/pkg/verify"
)

// VerifyStateMachinePrefix starts the logical ID of the verification
// workflow (infra/stacks: "VerifyWorkflow").
const VerifyStateMachinePrefix = "VerifyWorkflow"

// PrepareVerify synthesizes the app with cfgJSON (a configuration with a
// verify section) and builds the verify bootstrap, as PrepareRollout does
// for the rollout. The stack sets the function's network variables
// (verify.EnvSubnets, verify.EnvSecurityGroup) from the isolated VPC it
// creates: tokens, left out of Env; StartVerify supplies local values. A
// template that no longer sets them is an error, so the local run cannot
// supply what the deployed function would not get.
func PrepareVerify(ctx context.Context, root, work, cfgJSON string) (*Workflow, error) {
	w, err := prepareWorkflow(ctx, root, work, cfgJSON, verify.Function, "Verify")
	if err != nil {
		return nil, err
	}
	var t struct {
		Resources map[string]struct {
			Type       string
			Properties struct {
				Environment struct{ Variables map[string]json.RawMessage }
			}
		}
	}
	if err := json.Unmarshal(w.Template, &t); err != nil {
		return nil, fmt.Errorf("parse template: %w", err)
	}
	var fns []string
	for id, r := range t.Resources {
		switch {
		case r.Type == "AWS::StepFunctions::StateMachine" && strings.HasPrefix(id, VerifyStateMachinePrefix):
			w.StateMachine = id
		case r.Type == "AWS::Lambda::Function" && strings.HasPrefix(id, "Verify"):
			fns = append(fns, id)
			vars := r.Properties.Environment.Variables
			for _, name := range []string{verify.EnvSubnets, verify.EnvSecurityGroup} {
				if _, ok := vars[name]; !ok {
					return nil, fmt.Errorf("the template's verify function %s does not set %s", id, name)
				}
			}
		}
	}
	if w.StateMachine == "" || len(fns) != 1 {
		return nil, fmt.Errorf("template: verify state machine %q, verify functions %v: want one of each", w.StateMachine, fns)
	}
	return w, nil
}

// StartVerify starts the verify function under its own RIE with the
// harness's environment and the given network in place of the stack's
// isolated VPC (ec2sim accepts any subnet-/sg- ID). Close stops it.
func (h *Harness) StartVerify(ctx context.Context, rie string, w *Workflow, net verify.Network) (*Function, error) {
	env := slices.Concat(w.Env, []string{verify.EnvSubnets + "=" + strings.Join(net.Subnets, ","), verify.EnvSecurityGroup + "=" + net.SecurityGroup})
	f, err := Start(ctx, rie, verify.Function, w.Bootstrap, h.Env(env))
	if err != nil {
		return nil, err
	}
	h.extra = append(h.extra, f)
	return f, nil
}
