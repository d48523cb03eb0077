package localrun

import (
	"context"
	"encoding/pem"
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
//
// The functions get the environment of a user behind a corporate TLS proxy,
// which the SDK must honour or fail: ec2sim speaks HTTPS with a certificate
// of a private CA that only AWS_CA_BUNDLE trusts, and EC2's endpoint
// (FunctionEndpoint, a name that does not resolve) is reachable only
// through the CONNECT proxy in HTTPS_PROXY; NO_PROXY keeps loopback (the
// RIE's Runtime API) direct.
type Harness struct {
	Sim *ec2sim.Sim
	// Endpoint is the emulator's direct HTTPS URL (control API, tests);
	// FunctionEndpoint is the AWS_ENDPOINT_URL_EC2 the functions get.
	Endpoint, FunctionEndpoint string
	// CABundle is the PEM file of the emulator's certificate (AWS_CA_BUNDLE).
	CABundle      string
	Proxy         *Proxy
	Backup, Prune *Function
	Config        string
	srv           *httptest.Server
	dir           string
	extraEnv      []string
	extra         []*Function // started later (StartRollout)
}

// EndpointHost is the EC2 host name the functions use: covered by the
// emulator's certificate (httptest's, for example.com and *.example.com)
// and reachable only through the harness's proxy.
const EndpointHost = "ec2.example.com"

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
	// AllAtOnce: the policies of cdk.json set to "all-at-once" for this
	// run (see AllAtOnce).
	AllAtOnce []string
}

// Prepare builds both bootstraps for this machine and synthesizes the app
// with cdk.json's configuration, its rebooting policies all at once
// (AllAtOnce).
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
	// cdk.json's policies, all at once: the backup function's own run
	// (AllAtOnce). The waves default is played by PrepareRollout.
	cfgJSON, changed, err := AllAtOnce(root)
	if err != nil {
		return nil, err
	}
	p.AllAtOnce = changed
	tmpl, err := SynthConfig(ctx, root, filepath.Join(work, "cdk.out"), Stack, cfgJSON)
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
// extraEnv is added last to both functions' environments, so it can
// override (e.g. AWS_MAX_ATTEMPTS, AWS_RETRY_MODE).
func (p *Prepared) Start(ctx context.Context, sim *ec2sim.Sim, extraEnv ...string) (*Harness, error) {
	h := &Harness{Sim: sim, Config: p.BackupConfig, FunctionEndpoint: "https://" + EndpointHost}
	var err error
	if h.dir, err = os.MkdirTemp("", "amibackup-harness-"); err != nil {
		return nil, err
	}
	h.srv = httptest.NewTLSServer(http.Handler(sim))
	h.Endpoint = h.srv.URL
	h.CABundle = filepath.Join(h.dir, "ca-bundle.pem")
	if err := os.WriteFile(h.CABundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.srv.Certificate().Raw}), 0o600); err != nil {
		h.Close()
		return nil, err
	}
	if h.Proxy, err = StartProxy(EndpointHost, h.srv.Listener.Addr().String()); err != nil {
		h.Close()
		return nil, err
	}
	h.extraEnv = extraEnv
	if h.Backup, err = Start(ctx, p.RIE, "backup", p.BackupBin, h.Env(p.BackupEnv)); err != nil {
		h.Close()
		return nil, err
	}
	if h.Prune, err = Start(ctx, p.RIE, "prune", p.PruneBin, h.Env(p.PruneEnv)); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// Env is the environment a function of this harness runs with: fnEnv (the
// template's variables) plus what a user's machine sets: the emulator's
// endpoint name, reachable only through HTTPS_PROXY, its CA in
// AWS_CA_BUNDLE, NO_PROXY, and the extra variables given to Start. Tests
// that start further functions use it, so every bootstrap meets the same
// environment.
func (h *Harness) Env(fnEnv []string) []string {
	e := Env(h.FunctionEndpoint, ec2sim.DefaultAccount, ec2sim.DefaultRegion, fnEnv)
	e = append(e, "AWS_CA_BUNDLE="+h.CABundle, "HTTPS_PROXY="+h.Proxy.URL, "NO_PROXY=localhost,127.0.0.1")
	return append(e, h.extraEnv...)
}

// Close stops the functions and the emulator.
func (h *Harness) Close() {
	for _, f := range append([]*Function{h.Backup, h.Prune}, h.extra...) {
		if f != nil {
			f.Stop()
		}
	}
	if h.Proxy != nil {
		h.Proxy.Close()
	}
	if h.srv != nil {
		h.srv.Close()
	}
	if h.dir != "" {
		os.RemoveAll(h.dir)
	}
}
