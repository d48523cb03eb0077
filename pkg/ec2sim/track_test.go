package ec2sim_test

import (
	"testing"

	"github.com/amibackup/amibackup/pkg/ec2sim"
)

// TestTrackGroup: with TrackGroup the availability log holds the accepted
// groups only, of every kind; without it, every group.
func TestTrackGroup(t *testing.T) {
	for _, tc := range []struct {
		name  string
		track func(kind, name string) bool
		want  []string
	}{
		{"all", nil, []string{"autoscaling:a", "autoscaling:b", "tag:Service=x", "targetgroup:a", "targetgroup:b"}},
		{"named a", func(_, name string) bool { return name == "a" }, []string{"autoscaling:a", "targetgroup:a"}},
		{"tags only", func(kind, _ string) bool { return kind == ec2sim.GroupTag }, []string{"tag:Service=x"}},
	} {
		sim := ec2sim.New(ec2sim.Options{RebootModel: true, GroupTags: []string{"Service"}, TrackGroup: tc.track})
		for _, n := range []string{"a", "b"} {
			ids := sim.SeedFleet("", "", 2, map[string]string{"Service": "x"})
			sim.AddAutoScalingGroup(ec2sim.AutoScalingGroupSpec{Name: n, Instances: ids})
			sim.AddTargetGroup(ec2sim.TargetGroupSpec{Name: n, Instances: ids})
		}
		var got []string
		for _, g := range sim.Availability() {
			got = append(got, g.Kind+":"+g.Name)
		}
		if len(got) != len(tc.want) {
			t.Errorf("%s: logged %v, want %v", tc.name, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: logged %v, want %v", tc.name, got, tc.want)
				break
			}
		}
	}
}
