package backup_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
)

// benchScale is the emulator's time scale: AMIBACKUP_BENCH_TIMESCALE, default
// 100. The SDK's adaptive rate limiter adapts on the real clock, so a high
// scale understates throughput in simulated seconds; 1 is faithful but slow.
func benchScale() float64 {
	if v, err := strconv.ParseFloat(os.Getenv("AMIBACKUP_BENCH_TIMESCALE"), 64); err == nil && v > 0 {
		return v
	}
	return 100
}

// BenchmarkBackup runs whole backups under EC2's throttling buckets
// (CreateImage: 50 tokens, 5/s) on a time-scaled emulator and reports API
// calls per instance, throttled attempts, and the simulated duration, which
// EC2's bucket bounds below by (n-50)/5 seconds.
func BenchmarkBackup(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("instances=%d", n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				env := simtest.Start(b, ec2sim.Options{Throttle: true, TimeScale: benchScale()})
				env.Sim.SeedFleet("", "", n, map[string]string{"Backup": "nightly"})
				bk := newBackuper(b, env, nil)
				bk.Config.Policies[0].DeprecateAfter = 0
				bk.Config.Concurrency = 16
				t0 := env.Sim.Now()
				b.StartTimer()
				sum, err := bk.Run(context.Background(), scheduled("nightly"))
				b.StopTimer()
				if err != nil || len(sum.Done) != n {
					b.Fatalf("run: %v, done %d", err, len(sum.Done))
				}
				calls := env.Sim.Calls()
				sim := env.Sim.Now().Sub(t0).Seconds()
				b.ReportMetric(float64(calls.Total-sumMap(calls.Throttled))/float64(n), "calls/instance")
				b.ReportMetric(float64(sumMap(calls.Throttled)), "throttled")
				b.ReportMetric(sim, "simulated-s")
				b.ReportMetric(float64(n-50)/5, "bucket-bound-s")
				b.StartTimer()
			}
		})
	}
}

func sumMap(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
