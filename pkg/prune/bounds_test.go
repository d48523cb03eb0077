package prune_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
	"github.com/amibackup/amibackup/pkg/images"
	"github.com/amibackup/amibackup/pkg/logging/logtest"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/tags"
)

// TestPrune50kStaysBounded: 2,000 instances with 24 nights each (the
// oldest of each deleted), plus 2,000 images of a policy removed from the
// configuration (skipped), 1,000 of the 2,000 deletions denied (failed): a dry run and the real run each answer with a
// response far below Lambda's 6 MB and log no line of 256 KiB or more,
// while the full plan and every failure and skip are in the log.
func TestPrune50kStaysBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("50,000-image run skipped in -short mode")
	}
	env := simtest.Start(t, ec2sim.Options{Start: now})
	instances := env.Sim.SeedFleet("", "", 2000, map[string]string{"Backup": "nightly"})
	seedHistory(env.Sim, "prod", instances, 24)
	for i, in := range instances {
		at := now.AddDate(-1, 0, -i%300)
		tg := map[string]string{tags.ManagedBy: "prod", tags.Policy: "legacy", tags.InstanceID: in, tags.Time: tags.FormatTime(at)}
		env.Sim.AddImage(ec2sim.ImageSpec{Name: images.Name("legacy", in, at), InstanceID: in, Tags: tg, SnapshotTags: tg, Created: at})
	}
	env.Sim.Inject(ec2sim.Fault{Action: "DeregisterImage", Times: 1000, Code: "UnauthorizedOperation",
		Message: "You are not authorized to perform this operation. Encoded authorization failure message: " + strings.Repeat("x9Fq", 150)})
	c := cfg(t, `{"last":23}`)
	c.Policies[0].DeprecateAfter = 0
	c.Concurrency = 16

	for _, dry := range []bool{true, false} {
		var logs logtest.Buffer
		p := pruner(t, env, c, nil)
		p.Log = slog.New(slog.NewJSONHandler(&logs, nil)).With("function", "prune")
		r := req()
		r.DryRun = dry
		sum, runErr := p.Run(context.Background(), r)
		if dry != (runErr == nil) {
			t.Fatalf("dry %v: err %v", dry, runErr)
		}
		wantDeleted := 2000
		if dry {
			if len(sum.Plan) != 50000 || len(sum.Skipped) != 2000 {
				t.Fatalf("dry run: plan %d, skipped %d", len(sum.Plan), len(sum.Skipped))
			}
		} else if len(sum.Done) != wantDeleted-1000 || len(sum.Failed) != 1000 || len(sum.Skipped) != 2000 {
			t.Fatalf("run: deleted %d, failed %d, skipped %d", len(sum.Done), len(sum.Failed), len(sum.Skipped))
		}

		body, err := json.Marshal(sum)
		if err != nil {
			t.Fatal(err)
		}
		errLen := 0
		if runErr != nil {
			errLen = len(runErr.Error())
		}
		if len(body) >= logtest.LambdaResponseLimit/10 || errLen > 16<<10 {
			t.Fatalf("dry %v: response %d bytes, error message %d bytes", dry, len(body), errLen)
		}
		var resp struct {
			runner.View
			PruneCounts struct{ Plan, Keep, Delete int }
			Plan        []struct {
				ImageID string
				Keep    bool
			}
		}
		if err := json.Unmarshal(body, &resp); err != nil {
			t.Fatal(err)
		}
		if resp.PruneCounts.Plan != 50000 || resp.PruneCounts.Delete != wantDeleted || resp.Counts.Skipped != 2000 ||
			len(resp.Plan) == 0 || resp.Plan[0].Keep || !resp.Truncated {
			t.Fatalf("dry %v: response counts %+v %+v, plan sample %d (first keep %v)", dry, resp.Counts, resp.PruneCounts, len(resp.Plan), resp.Plan[0].Keep)
		}
		if !dry && (resp.Counts.Failed != 1000 || len(resp.FailedByReason) != 1 || resp.FailedByReason[0].Count != 1000 ||
			!strings.Contains(resp.FailedByReason[0].Reason, "UnauthorizedOperation")) {
			t.Fatalf("failures in the response: %d, by reason %+v", resp.Counts.Failed, resp.FailedByReason)
		}

		longest, planned, failures, skips := 0, 0, map[string]bool{}, map[string]bool{}
		for _, line := range logs.Lines() {
			longest = max(longest, len(line))
			if len(line) >= logtest.CloudWatchEventLimit {
				t.Fatalf("dry %v: log line of %d bytes: %.200s", dry, len(line), line)
			}
			var rec struct {
				Msg             string
				Entries         []json.RawMessage
				Failures, Skips []runner.Entry
			}
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("log line is not JSON: %v", err)
			}
			if rec.Msg == "prune plan" {
				planned += len(rec.Entries)
			}
			for _, e := range rec.Failures {
				failures[e.ID] = true
			}
			for _, e := range rec.Skips {
				skips[e.ID] = true
			}
		}
		if planned != 50000 || len(skips) != 2000 || len(failures) != len(sum.Failed) {
			t.Fatalf("dry %v: the log holds %d plan entries, %d skips, %d failures", dry, planned, len(skips), len(failures))
		}
		t.Logf("dry %v: response %d bytes, error message %d bytes, longest log line %d bytes, %d log lines", dry, len(body), errLen, longest, len(logs.Lines()))
	}
}

// TestDryRunAnswersWhenGuardWouldBlock: the preview an operator asks for
// when the guard blocks is a successful dry run with the whole plan that
// says why the real run would be blocked; the blocked real run names the
// dry run and force.
func TestDryRunAnswersWhenGuardWouldBlock(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{Start: now})
	instances := env.Sim.SeedFleet("", "", 4, map[string]string{"Backup": "nightly"})
	seedHistory(env.Sim, "prod", instances, 5)
	env.Sim.ResetCalls()
	p := pruner(t, env, cfg(t, `{"last":1}`), nil) // would delete 80%
	for _, tc := range []struct {
		name       string
		dry, force bool
	}{{"dry run", true, false}, {"dry run with force", true, true}, {"real run", false, false}} {
		t.Run(tc.name, func(t *testing.T) {
			r := req()
			r.DryRun, r.Force = tc.dry, tc.force
			sum, err := p.Run(context.Background(), r)
			if sum == nil {
				t.Fatalf("no summary: %v", err)
			}
			if calls := env.Sim.Calls(); calls.Mutating() != 0 || len(env.Sim.Images("", "")) != 20 {
				t.Fatalf("changed state: %v", calls.ByAction)
			}
			del := 0
			for _, e := range sum.Plan {
				if !e.Keep {
					del++
				}
			}
			if len(sum.Plan) != 20 || del != 16 {
				t.Fatalf("plan of %d entries, %d deletions", len(sum.Plan), del)
			}
			switch {
			case tc.dry && tc.force:
				if err != nil || sum.Blocked != "" || len(sum.Warnings) == 0 {
					t.Fatalf("forced dry run: err %v, blocked %q, warnings %v", err, sum.Blocked, sum.Warnings)
				}
			case tc.dry:
				if err != nil || !strings.Contains(sum.Blocked, "real run would be blocked") || !strings.Contains(sum.Blocked, "maxDeleteShare") ||
					!strings.Contains(sum.Blocked, `"force": true`) || len(sum.Warnings) == 0 {
					t.Fatalf("dry run: err %v, blocked %q, warnings %v", err, sum.Blocked, sum.Warnings)
				}
			default:
				if err == nil || !strings.Contains(err.Error(), `"dryRun": true`) || !strings.Contains(err.Error(), `"force": true`) {
					t.Fatalf("blocked run: err %v", err)
				}
			}
		})
	}
}

// TestHungListingEndsWithSummary: a listing call that hangs (DescribeImages,
// the instance check, the reference check, the orphan-snapshot listing) is cut off before the
// deadline and the run ends with its own summary line and error, not with
// Lambda's "Task timed out".
func TestHungListingEndsWithSummary(t *testing.T) {
	for _, action := range []string{"DescribeImages", "DescribeInstances", "DescribeImageReferences", "DescribeSnapshots"} {
		t.Run(action, func(t *testing.T) {
			env := simtest.Start(t, ec2sim.Options{Start: now})
			seedHistory(env.Sim, "prod", env.Sim.SeedFleet("", "", 2, map[string]string{"Backup": "nightly"}), 3)
			env.Sim.Inject(ec2sim.Fault{Action: action, Delay: time.Hour})
			var logs logtest.Buffer
			retention := `{"last":3}`
			if action == "DescribeImageReferences" {
				retention = `{"last":2}` // something to check
			}
			p := pruner(t, env, cfg(t, retention), nil)
			p.Log = slog.New(slog.NewJSONHandler(&logs, nil))
			p.Margin = 2 * time.Second
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			dl, _ := ctx.Deadline()
			sum, err := p.Run(ctx, req())
			if ended := time.Now(); !ended.Before(dl) {
				t.Fatalf("run ended %v after the deadline", ended.Sub(dl))
			}
			if sum == nil || err == nil || len(sum.Failed) != 1 || !strings.Contains(err.Error(), "deadline") {
				t.Fatalf("summary %v, err %v", sum, err)
			}
			if !strings.Contains(strings.Join(logs.Lines(), "\n"), `"msg":"run summary"`) {
				t.Fatalf("no summary line in the log:\n%s", strings.Join(logs.Lines(), "\n"))
			}
			if n := env.Sim.Calls().Count("DeregisterImage"); n != 0 {
				t.Fatalf("%d images deleted", n)
			}
		})
	}
}
