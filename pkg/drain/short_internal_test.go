package drain

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
)

// TestBelowDesired: what fills the desired capacity (launched and
// InService members, by weight) against DesiredCapacity, for the cases
// ec2sim does not produce (weights, a capacity in vCPUs, warm pools,
// detaching members); TestShortCapacity covers the emulated ones.
func TestBelowDesired(t *testing.T) {
	m := func(lc, w string) types.Instance {
		i := types.Instance{LifecycleState: types.LifecycleState(lc)}
		if w != "" {
			i.WeightedCapacity = aws.String(w)
		}
		return i
	}
	cases := []struct {
		name    string
		typ     string
		desired int32
		members []types.Instance
		filled  int
		below   bool
	}{
		{"whole", "", 3, []types.Instance{m("InService", ""), m("InService", ""), m("InService", "")}, 3, false},
		{"launching counts", "", 3, []types.Instance{m("InService", ""), m("Pending", ""), m("Pending:Wait", "")}, 3, false},
		{"one not launched", "", 3, []types.Instance{m("InService", ""), m("InService", "")}, 2, true},
		{"leaving does not count", "", 3, []types.Instance{m("InService", ""), m("InService", ""), m("Terminating", "")}, 2, true},
		{"detaching does not count", "", 3, []types.Instance{m("InService", ""), m("InService", ""), m("Detaching", "")}, 2, true},
		{"Standby decremented", "", 2, []types.Instance{m("InService", ""), m("InService", ""), m("Standby", "")}, 2, false},
		{"warm pool outside", "", 2, []types.Instance{m("InService", ""), m("Warmed:Running", "")}, 1, true},
		{"weights", "units", 8, []types.Instance{m("InService", "4"), m("InService", "2"), m("InService", "2")}, 8, false},
		{"weights, overage", "units", 7, []types.Instance{m("InService", "4"), m("InService", "4")}, 8, false},
		{"weights, one not launched", "units", 8, []types.Instance{m("InService", "4"), m("InService", "2")}, 6, true},
		{"weight unreadable counts 1", "", 2, []types.Instance{m("InService", "x"), m("InService", "0")}, 2, false},
		{"capacity in vCPUs: not compared", "vcpu", 64, []types.Instance{m("InService", "")}, 0, false},
		{"capacity in MiB: not compared", "memory-mib", 65536, []types.Instance{m("InService", "")}, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := types.AutoScalingGroup{DesiredCapacity: aws.Int32(tc.desired), Instances: tc.members}
			if tc.typ != "" {
				g.DesiredCapacityType = aws.String(tc.typ)
			}
			filled, _, below := belowDesired(g)
			if filled != tc.filled || below != tc.below {
				t.Errorf("filled %d below %v, want %d %v", filled, below, tc.filled, tc.below)
			}
		})
	}
}
