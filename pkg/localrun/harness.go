package localrun

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/ec2sim"
)

// Stack is the stack name of cdk.json's default deployment.
const Stack = "AmiBackup"

// Harness is an emulated account: ec2sim on a local port and the backup and
// prune bootstraps under the RIE, configured from the synthesized template.
type Harness struct {
	Sim           *ec2sim.Sim
	Endpoint      string
	Backup, Prune *Function
	Config        string
	srv           *httptest.Server
}

// FindRIE returns the RIE binary: $AMIBACKUP_RIE, .tools/bin or PATH.
func FindRIE(root string) (string, error) {
	if p := os.Getenv("AMIBACKUP_RIE"); p != "" {
		return p, nil
	}
	if p := filepath.Join(root, ".tools", "bin", "aws-lambda-rie"); fileExists(p) {
		return p, nil
	}
	if p, err := exec.LookPath("aws-lambda-rie"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("aws-lambda-rie not found: run `make tools` (go install github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@...)")
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Prepared holds what is built once: bootstraps and the template's config.
type Prepared struct {
	RIE                 string
	BackupBin, PruneBin string
	// BackupEnv and PruneEnv are the functions' environments from the
	// synthesized template; BackupConfig is the AMIBACKUP_CONFIG in it.
	BackupEnv, PruneEnv []string
	BackupConfig        string
}

// Prepare builds both bootstraps for this machine and synthesizes the app.
func Prepare(ctx context.Context, root, work string) (*Prepared, error) {
	rie, err := FindRIE(root)
	if err != nil {
		return nil, err
	}
	p := &Prepared{RIE: rie}
	if p.BackupBin, err = Build(ctx, root, work, runtime.GOARCH, "backup"); err != nil {
		return nil, err
	}
	if p.PruneBin, err = Build(ctx, root, work, runtime.GOARCH, "prune"); err != nil {
		return nil, err
	}
	tmpl, err := Synth(ctx, root, filepath.Join(work, "cdk.out"), Stack)
	if err != nil {
		return nil, err
	}
	if p.BackupEnv, err = TemplateEnv(tmpl, "Backup"); err != nil {
		return nil, err
	}
	if p.PruneEnv, err = TemplateEnv(tmpl, "Prune"); err != nil {
		return nil, err
	}
	p.BackupConfig = EnvValue(p.BackupEnv, config.EnvVar)
	return p, nil
}

// Start serves sim on a local port and starts both functions against it.
func (p *Prepared) Start(ctx context.Context, sim *ec2sim.Sim) (*Harness, error) {
	h := &Harness{Sim: sim, Config: p.BackupConfig}
	h.srv = httptest.NewServer(http.Handler(sim))
	h.Endpoint = h.srv.URL
	var err error
	if h.Backup, err = Start(ctx, p.RIE, "backup", p.BackupBin, Env(h.Endpoint, ec2sim.DefaultAccount, ec2sim.DefaultRegion, p.BackupEnv)); err != nil {
		h.Close()
		return nil, err
	}
	if h.Prune, err = Start(ctx, p.RIE, "prune", p.PruneBin, Env(h.Endpoint, ec2sim.DefaultAccount, ec2sim.DefaultRegion, p.PruneEnv)); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// Close stops the functions and the emulator.
func (h *Harness) Close() {
	for _, f := range []*Function{h.Backup, h.Prune} {
		if f != nil {
			f.Stop()
		}
	}
	if h.srv != nil {
		h.srv.Close()
	}
}
