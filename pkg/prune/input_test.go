package prune_test

import (
	"context"
	"strings"
	"testing"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
)

// TestMalformedInputsDeleteNothing: bad inputs never reach EC2.
func TestMalformedInputsDeleteNothing(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{Start: now})
	instances := env.Sim.SeedFleet("", "", 2, map[string]string{"Backup": "nightly"})
	seedHistory(env.Sim, "prod", instances, 5)
	p := pruner(t, env, cfg(t, `{"last":1}`), nil)
	for _, in := range []string{``, `[]`, `{}`, `{"time":"now"}`, `{"policy":"x","time":"2026-11-24T05:00:00Z"}`,
		`{"time":"2026-11-24T05:00:00Z","force":true}`, `{"time":"2026-11-24T05:00:00Z","dryRun":false}`,
		`{"detail-type":"Prune Requested","source":"amibackup","time":"2026-11-24T05:00:00Z","detail":{"policy":"nightly","olderThan":"1d"}}`,
		`{"detail-type":"Backup Requested","source":"amibackup","time":"2026-11-24T05:00:00Z","detail":{}}`,
		`{"detail-type":"Prune Requested","source":"amibackup","detail":{}}`} {
		if _, err := p.Handle(context.Background(), []byte(in)); err == nil {
			t.Errorf("accepted %q", in)
		} else if !strings.Contains(err.Error(), "input") && !strings.Contains(err.Error(), "event") {
			t.Errorf("%q: error does not name the field: %v", in, err)
		}
	}
	if c := env.Sim.Calls(); c.Total != 0 || len(env.Sim.Images("", "")) != 10 {
		t.Fatalf("bad input reached EC2: %v", c.ByAction)
	}
}
