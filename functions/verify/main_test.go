package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
	"github.com/amibackup/amibackup/pkg/localrun"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/verify"
)

const cfg = `{"deployment":"prod","policies":[{"name":"nightly","selector":{"tagKey":"Backup"},
 "schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7},
 "verify":{"schedule":{"expression":"cron(0 5 ? * SUN *)"},"maxConcurrent":2}}]}`

// TestBootstrap: the real bootstrap under the Lambda RIE, configured from
// the environment as the stack configures it, drives a verification
// against the emulator through the action contract (start, step, cleanup,
// finish); without the network variables its cold start fails naming them.
func TestBootstrap(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the bootstrap")
	}
	root, _ := filepath.Abs("../..")
	rie, err := localrun.FindRIE(root)
	if err != nil {
		t.Skip(err)
	}
	ctx := context.Background()
	bin, err := localrun.Build(ctx, root, t.TempDir(), runtime.GOARCH, "verify")
	if err != nil {
		t.Fatal(err)
	}
	// The function's clock is the real one: the emulator's runs with it
	// (scale 1), moved ahead only between steps.
	env := simtest.Start(t, ec2sim.Options{})
	var newest []string
	for _, inst := range []string{"i-00000000000000001", "i-00000000000000002", "i-00000000000000003"} {
		id, _ := env.Sim.AddImage(ec2sim.ImageSpec{InstanceID: inst, Created: time.Now().Add(-time.Hour),
			Tags: map[string]string{tags.ManagedBy: "prod", tags.Policy: "nightly", tags.InstanceID: inst}})
		newest = append(newest, id)
	}
	env.Sim.UnbootableImage(newest[2])

	t.Run("no network", func(t *testing.T) {
		fn, err := localrun.Start(ctx, rie, "verify", bin, localrun.Env(env.URL, ec2sim.DefaultAccount, ec2sim.DefaultRegion,
			[]string{config.EnvVar + "=" + cfg}))
		if err != nil {
			t.Fatal(err)
		}
		defer fn.Stop()
		_, _, err = fn.Invoke(ctx, []byte(`{"action":"start","input":{"policy":"nightly","time":"`+tags.FormatTime(time.Now())+`"}}`))
		if err == nil || !strings.Contains(fn.Logs(), verify.EnvSubnets) {
			t.Fatalf("cold start without %s: %v\n%s", verify.EnvSubnets, err, fn.Logs())
		}
	})

	fn, err := localrun.Start(ctx, rie, "verify", bin, localrun.Env(env.URL, ec2sim.DefaultAccount, ec2sim.DefaultRegion, []string{
		config.EnvVar + "=" + cfg,
		verify.EnvSubnets + "=subnet-0aaaaaaaaaaaaaaaa,subnet-0bbbbbbbbbbbbbbbb",
		verify.EnvSecurityGroup + "=sg-0cccccccccccccccc",
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer fn.Stop()
	invoke := func(req map[string]any) (json.RawMessage, error) {
		b, _ := json.Marshal(req)
		out, _, err := fn.Invoke(ctx, b)
		return out, err
	}
	var r verify.Result
	out, err := invoke(map[string]any{"action": "start", "input": json.RawMessage(`{"policy":"nightly","time":"` + tags.FormatTime(time.Now()) + `"}`)})
	if err != nil {
		t.Fatalf("start: %v\n%s", err, fn.Logs())
	}
	json.Unmarshal(out, &r)
	// Steps until the two bootable images are verified (the unbootable
	// one would take its 20-minute timeout on the function's real clock),
	// then the Catch's path: cleanup until done, finish.
	verified := func() bool {
		ims := env.Sim.Images("", "")
		return ims[0].Tags[tags.Verified] != "" && ims[1].Tags[tags.Verified] != ""
	}
	for i := 0; !r.Done && !verified(); i++ {
		if i > 50 {
			t.Fatalf("not verified after 50 steps\n%s", fn.Logs())
		}
		env.Sim.Advance(time.Duration(max(r.WaitSeconds, 1)) * time.Second)
		if out, err = invoke(map[string]any{"action": "step", "state": r.State}); err != nil {
			t.Fatalf("step: %v\n%s", err, fn.Logs())
		}
		r = verify.Result{}
		json.Unmarshal(out, &r)
	}
	for i := 0; ; i++ {
		if out, err = invoke(map[string]any{"action": "cleanup", "state": r.State}); err != nil {
			t.Fatalf("cleanup: %v\n%s", err, fn.Logs())
		}
		r = verify.Result{}
		json.Unmarshal(out, &r)
		if r.Done || i > 10 {
			break
		}
		env.Sim.Advance(time.Duration(r.WaitSeconds) * time.Second)
	}
	_, err = invoke(map[string]any{"action": "finish", "state": r.State})
	var fe *localrun.FunctionError
	if !errors.As(err, &fe) || !strings.Contains(fe.Message, "not tested") {
		t.Fatalf("finish: %v (the unbootable image was cut short by cleanup)", err)
	}
	for i, id := range newest[:2] {
		if env.Sim.Images("", "")[i].ID != id || env.Sim.Images("", "")[i].Tags[tags.Verified] == "" {
			t.Errorf("%s not verified", id)
		}
	}
	env.Sim.Advance(time.Minute)
	for _, in := range env.Sim.Instances("", "") {
		if in.State != "terminated" {
			t.Errorf("%s left %s", in.ID, in.State)
		}
	}
}
