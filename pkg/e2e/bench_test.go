package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/localrun"
)

// BenchmarkBootstrap reports what a deployed function costs: bootstrap
// sizes as the stacks build them (arm64) and for this machine, runtime
// init duration as reported by the RIE, and the bootstrap's peak RSS.
func BenchmarkBootstrap(b *testing.B) {
	root, _ := filepath.Abs("../..")
	dir := b.TempDir()
	sizes := map[string]float64{}
	for _, fn := range []string{"backup", "prune"} {
		bin, err := localrun.Build(context.Background(), root, dir, "arm64", fn)
		if err != nil {
			b.Fatal(err)
		}
		st, _ := os.Stat(bin)
		sizes[fn] = float64(st.Size()) / 1e6
	}
	for b.Loop() {
		sim := ec2sim.New(ec2sim.Options{})
		h, err := prepared.Start(context.Background(), sim)
		if err != nil {
			b.Fatal(err)
		}
		_, rep, _ := h.Backup.Invoke(context.Background(), schedInput("nightly", start))
		h.Close()
		b.ReportMetric(rep.InitMS, "init-ms")
		b.ReportMetric(sizes["backup"], "backup-arm64-MB")
		b.ReportMetric(sizes["prune"], "prune-arm64-MB")
		b.ReportMetric(rep.MaxRSSMB, "peak-rss-MB")
	}
}

// BenchmarkEndToEnd1000 backs up 1,000 instances through the bootstrap
// under the RIE, with EC2's throttling on a time-scaled emulator.
func BenchmarkEndToEnd1000(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		sim := ec2sim.New(ec2sim.Options{Throttle: true, TimeScale: 100, Start: start})
		sim.SeedFleet("", "", 1000, map[string]string{"Backup": "nightly"})
		h, err := prepared.Start(context.Background(), sim)
		if err != nil {
			b.Fatal(err)
		}
		t0, s0 := time.Now(), sim.Now()
		b.StartTimer()
		_, rep, err := h.Backup.Invoke(context.Background(), schedInput("nightly", start.Add(time.Hour)))
		b.StopTimer()
		if err != nil || len(sim.Images("", "")) != 1000 {
			b.Fatalf("backup: %v, %d images", err, len(sim.Images("", "")))
		}
		b.ReportMetric(time.Since(t0).Seconds(), "wall-s/1000-instances")
		b.ReportMetric(sim.Now().Sub(s0).Seconds(), "simulated-s/1000-instances")
		b.ReportMetric(rep.MaxRSSMB, "peak-rss-MB")
		h.Close()
		b.StartTimer()
	}
}
