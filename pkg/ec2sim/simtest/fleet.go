package simtest

import (
	"slices"
	"testing"
	"time"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/tags"
)

// WavesFleet is the fleet the reboot-wave tests share (pkg/rollout against
// the functions' code, pkg/e2e through the synthesized state machine): a web
// tier of 3 in Auto Scaling group "web" behind target group "web", a
// database pair tagged Service=db, two stand-alone instances, all selected
// by the tag Backup=yes.
type WavesFleet struct {
	Web, DB, Standalone []string
	TargetGroup         string
}

// SeedWavesFleet seeds the fleet into sim (whose reboot model and
// GroupTags ["Service"] the caller sets) and resets the call log.
func SeedWavesFleet(sim *ec2sim.Sim, deregistrationDelay, healthyAfter time.Duration) WavesFleet {
	return SeedWavesFleetWith(sim, WavesOptions{DeregistrationDelay: deregistrationDelay, HealthyAfter: healthyAfter})
}

// WavesOptions vary the fleet of SeedWavesFleetWith.
type WavesOptions struct {
	DeregistrationDelay, HealthyAfter time.Duration
	// Attach attaches target group "web" to Auto Scaling group "web" (the
	// group registers and deregisters its members, as most setups do).
	Attach bool
	// HealthCheckGracePeriod of group "web" (with ec2sim.Options.HealthChecks).
	HealthCheckGracePeriod time.Duration
}

// SeedWavesFleetWith seeds the WavesFleet with the options; group "web"
// propagates Backup=yes to the instances it launches (replacements).
func SeedWavesFleetWith(sim *ec2sim.Sim, o WavesOptions) WavesFleet {
	sel := map[string]string{"Backup": "yes"}
	f := WavesFleet{
		Web:        sim.SeedFleet("", "", 3, sel),
		DB:         sim.SeedFleet("", "", 2, map[string]string{"Backup": "yes", "Service": "db"}),
		Standalone: sim.SeedFleet("", "", 2, sel),
	}
	spec := ec2sim.TargetGroupSpec{Name: "web", Instances: f.Web, DeregistrationDelay: o.DeregistrationDelay, HealthyAfter: o.HealthyAfter}
	asg := ec2sim.AutoScalingGroupSpec{Name: "web", Instances: f.Web, MinSize: 1, HealthCheckGracePeriod: o.HealthCheckGracePeriod, Tags: sel}
	if o.Attach {
		spec.Instances = nil // the group registers its members
		f.TargetGroup = sim.AddTargetGroup(spec)
		asg.TargetGroupARNs = []string{f.TargetGroup}
		sim.AddAutoScalingGroup(asg)
	} else {
		sim.AddAutoScalingGroup(asg)
		f.TargetGroup = sim.AddTargetGroup(spec)
	}
	sim.ResetCalls()
	return f
}

// All is every instance of the fleet.
func (f WavesFleet) All() []string { return slices.Concat(f.Web, f.DB, f.Standalone) }

// ImagesPerInstance counts the slot's images per instance.
func ImagesPerInstance(sim *ec2sim.Sim, slot time.Time) map[string]int {
	n := map[string]int{}
	for _, im := range sim.Images("", "") {
		if im.Tags[tags.Time] == tags.FormatTime(slot) {
			n[im.Tags[tags.InstanceID]]++
		}
	}
	return n
}

// MaxUnavailable returns the most members down at once per group
// ("kind:name"); an Auto Scaling member seen stopped while InService
// (rebooted without Standby) is a test error, except those given (a halted
// member put back).
func MaxUnavailable(t testing.TB, sim *ec2sim.Sim, putBack ...string) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, g := range sim.Availability() {
		got[g.Kind+":"+g.Name] = g.MaxUnavailable
		for _, id := range g.Unhealthy {
			if !slices.Contains(putBack, id) {
				t.Errorf("group %s: %s rebooted while InService (not drained first)", g.Key, id)
			}
		}
	}
	return got
}
