package e2e

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/localrun"
)

// The share and copy bootstraps are built once, on first use (the harness
// builds only backup and prune).
var (
	extraOnce sync.Once
	extraBins map[string]string
	extraErr  error
)

func extraBootstraps(t *testing.T) map[string]string {
	t.Helper()
	extraOnce.Do(func() {
		root, _ := filepath.Abs("../..")
		// Next to the harness's bootstraps (<work>/<arch>/backup/bootstrap),
		// which TestMain removes at the end; t.TempDir would go with this test.
		work := filepath.Dir(filepath.Dir(filepath.Dir(prepared.BackupBin)))
		extraBins = map[string]string{}
		for _, fn := range []string{"share", "copy"} {
			if extraBins[fn], extraErr = localrun.Build(context.Background(), root, work, runtime.GOARCH, fn); extraErr != nil {
				return
			}
		}
	})
	if extraErr != nil {
		t.Fatal(extraErr)
	}
	return extraBins
}

// inputFunctions starts all four functions against one emulator: backup
// and prune with the synthesized template's configuration (the harness),
// share with that configuration plus a sharing section, copy with a
// recovery configuration (both validated by pkg/config like the stacks do).
func inputFunctions(t *testing.T) (*localrun.Harness, map[string]*localrun.Function) {
	t.Helper()
	h := harness(t)
	bins := extraBootstraps(t)
	base, err := config.Parse([]byte(h.Config), "")
	if err != nil {
		t.Fatal(err)
	}
	base.Sharing = &config.Sharing{AccountIDs: []string{"222222222222"}}
	base.ApplyDefaults()
	shareCfg := base.JSON()
	copyCfg := `{"deployment":"AmiBackupRecovery","recovery":{"sourceAccountIds":["111111111111"],"sourceDeployment":"` + localrun.Stack + `","retention":{"last":3}}}`
	for _, c := range []string{shareCfg, copyCfg} {
		if _, err := config.Parse([]byte(c), ""); err != nil {
			t.Fatalf("test configuration: %v", err)
		}
	}
	fns := map[string]*localrun.Function{"backup": h.Backup, "prune": h.Prune}
	for fn, cfg := range map[string]string{"share": shareCfg, "copy": copyCfg} {
		env := h.Env([]string{config.EnvVar + "=" + cfg, "AWS_ENDPOINT_URL_KMS=" + h.FunctionEndpoint})
		f, err := localrun.Start(context.Background(), prepared.RIE, fn, bins[fn], env)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(f.Stop)
		fns[fn] = f
	}
	return h, fns
}

// TestInputRejectedUnderRIE (issue 16, items 5 and 6): through the real
// bootstraps under the RIE, every function that takes input rejects
// trailing data, a second JSON object, an empty payload and a null that
// would widen the request, with the project's message and zero EC2 calls.
// Before the functions took the raw payload, aws-lambda-go decoded only the
// first JSON value: the backup ran (CreateImage) and prune pruned.
func TestInputRejectedUnderRIE(t *testing.T) {
	h, fns := inputFunctions(t)
	h.Sim.SeedFleet("", "", 2, map[string]string{"Backup": "nightly"})
	at := start.Add(time.Hour).Format(time.RFC3339)
	valid := map[string]string{
		"backup": `{"policy":"nightly","time":"` + at + `"}`,
		"prune":  `{"time":"` + at + `"}`,
		"share":  `{"sweep":true,"time":"` + at + `"}`,
		"copy":   `{"sweep":true,"time":"` + at + `"}`,
	}
	manual := func(detail string) string {
		return `{"version":"0","id":"1","detail-type":"Backup Requested","source":"amibackup","account":"123456789012","time":"` + at +
			`","region":"us-east-1","resources":[],"detail":` + detail + `}`
	}
	prune := func(detail string) string {
		return strings.Replace(manual(detail), "Backup Requested", "Prune Requested", 1)
	}
	type bad struct{ name, payload, want string }
	cases := map[string][]bad{
		"backup": {
			{"instanceIds null", manual(`{"policy":"nightly","instanceIds":null}`), "event.detail.instanceIds: is null"},
			{"dryRun null", manual(`{"policy":"nightly","instanceIds":["i-0123456789abcdef0"],"dryRun":null}`), "event.detail.dryRun: is null"},
			{"manual request then garbage", manual(`{"policy":"nightly"}`) + ` garbage`, "input: invalid JSON: trailing data"},
		},
		"prune": {
			{"policy null", prune(`{"policy":null}`), "event.detail.policy: is null"},
			{"dryRun null", prune(`{"dryRun":null}`), "event.detail.dryRun: is null"},
			{"force null", prune(`{"force":null}`), "event.detail.force: is null"},
		},
		"share": {{"sweep null", `{"sweep":null,"time":"` + at + `"}`, "input.sweep: is null"}},
		"copy":  {{"time null", `{"sweep":true,"time":null}`, "input.time: is null"}},
	}
	for fn, ok := range valid {
		cases[fn] = append(cases[fn],
			bad{"trailing data", ok + ` garbage`, `input: invalid JSON: trailing data after the JSON object ("garbage")`},
			bad{"second JSON object", ok + ` {"force":true,"policy":"nightly","instanceIds":["i-0123456789abcdef0"]}`, "input: invalid JSON: trailing data after the JSON object"},
			bad{"empty payload", ``, "input: is empty: a JSON object is required"},
		)
	}
	ctx := context.Background()
	for _, fn := range []string{"backup", "prune", "share", "copy"} {
		for _, c := range cases[fn] {
			t.Run(fn+"/"+c.name, func(t *testing.T) {
				h.Sim.ResetCalls()
				_, _, err := fns[fn].Invoke(ctx, []byte(c.payload))
				var fe *localrun.FunctionError
				if !errors.As(err, &fe) {
					t.Fatalf("not a function error: %v\n%s", err, fns[fn].Logs())
				}
				if !strings.Contains(fe.Message, c.want) {
					t.Errorf("errorMessage %q, want %q", fe.Message, c.want)
				}
				// aws-lambda-go names errorType after the error's Go type, as
				// before the handler took the raw payload.
				if fe.Type != "errorString" && fe.Type != "wrapError" {
					t.Errorf("errorType %q", fe.Type)
				}
				if calls := h.Sim.Calls(); calls.Total != 0 {
					t.Fatalf("rejected input reached EC2: %v", calls.ByAction)
				}
			})
		}
	}
	if len(h.Sim.Images("", "")) != 0 {
		t.Fatal("images were created")
	}
	// Control: the same functions and emulator do call EC2 for valid input,
	// so zero calls above means rejected, not unreachable.
	for _, fn := range []string{"backup", "prune", "share", "copy"} {
		h.Sim.ResetCalls()
		out, _, err := fns[fn].Invoke(ctx, []byte(valid[fn]))
		if err != nil {
			t.Fatalf("%s valid input: %v\n%s", fn, err, fns[fn].Logs())
		}
		if h.Sim.Calls().Total == 0 {
			t.Errorf("%s valid input made no EC2 call: %s", fn, out)
		}
		if !strings.HasPrefix(string(out), "{") || strings.HasSuffix(string(out), "\n") {
			t.Errorf("%s result %q is not one JSON object as aws-lambda-go renders it", fn, out)
		}
	}
	if n := len(h.Sim.Images("", "")); n != 2 {
		t.Errorf("valid backup created %d images, want 2", n)
	}
}
