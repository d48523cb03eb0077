package backup_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
	"github.com/amibackup/amibackup/pkg/logging/logtest"
	"github.com/amibackup/amibackup/pkg/runner"
)

// TestThousandFailuresStayBounded: 1,000 instances whose CreateImage is
// denied (UnauthorizedOperation, with EC2's long encoded authorization
// message) give a bounded response and error message, and no log line
// reaches CloudWatch Logs' 256 KiB event limit, while every failure is
// still in the log (the summary line, then its continuation records).
func TestThousandFailuresStayBounded(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{Start: slot})
	env.Sim.SeedFleet("", "", 1000, map[string]string{"Backup": "nightly"})
	env.Sim.Inject(ec2sim.Fault{Action: "CreateImage", Code: "UnauthorizedOperation",
		Message: "You are not authorized to perform this operation. Encoded authorization failure message: " + strings.Repeat("Ab3xZ9-q", 60)})
	var logs logtest.Buffer
	b := newBackuper(t, env, nil)
	b.Log = slog.New(slog.NewJSONHandler(&logs, nil)).With("function", "backup")
	sum, err := b.Run(context.Background(), scheduled("nightly"))
	if err == nil || len(sum.Failed) != 1000 {
		t.Fatalf("err %v, %d failed", err, len(sum.Failed))
	}
	if msg := err.Error(); len(msg) > 16<<10 || !strings.Contains(msg, "1000 failed") {
		t.Fatalf("error message of %d bytes: %.300s", len(msg), msg)
	}
	body, err := json.Marshal(sum)
	if err != nil {
		t.Fatal(err)
	}
	var resp runner.View
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if len(body) > 200<<10 || resp.Counts.Failed != 1000 || len(resp.Failed) != runner.MaxEntries ||
		len(resp.FailedByReason) != 1 || resp.FailedByReason[0].Count != 1000 || !strings.Contains(resp.FailedByReason[0].Reason, "UnauthorizedOperation") {
		t.Fatalf("response of %d bytes: counts %+v, %d failures, by reason %+v", len(body), resp.Counts, len(resp.Failed), resp.FailedByReason)
	}
	longest := 0
	logged := map[string]bool{}
	for line := range strings.SplitSeq(strings.TrimSpace(logs.String()), "\n") {
		longest = max(longest, len(line))
		if len(line) > logtest.CloudWatchEventLimit {
			t.Fatalf("log line of %d bytes: %.200s", len(line), line)
		}
		var rec struct{ Failures []runner.Entry }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		for _, e := range rec.Failures {
			logged[e.ID] = true
		}
	}
	if len(logged) != 1000 {
		t.Fatalf("the log holds %d of 1000 failures", len(logged))
	}
	t.Logf("response %d bytes, error message %d bytes, longest log line %d bytes", len(body), len(sum.Err().Error()), longest)
}
