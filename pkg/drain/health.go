package drain

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/tags"
)

// Conditions Health reports.
const (
	// OK: running, instance and system status checks ok.
	OK = "ok"
	// Pending: on its way (stopping, pending, checks initializing or
	// insufficient-data): wait.
	Pending = "pending"
	// Impaired: running with a failed status check.
	Impaired = "impaired"
	// Stopped: stopped (or stopping for good). Part of every reboot for a
	// few seconds; one that stays is an instance that did not boot.
	Stopped = "stopped"
	// Gone: terminated, shutting down, or unknown to EC2.
	Gone = "gone"
)

// InstanceHealth is one instance's condition with the reason.
type InstanceHealth struct {
	InstanceID string `json:"id"`
	Condition  string `json:"condition"`
	State      string `json:"state,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

// Health does one round of DescribeInstanceStatus (IncludeAllInstances,
// 100 IDs per call) and reports each instance's condition, in the order
// given. Only OK is healthy; the workflow decides how long the others may
// last (healthTimeout): a reboot passes through stopped and pending.
func (d *Drainer) Health(ctx context.Context, ids []string) ([]InstanceHealth, error) {
	for i, id := range ids {
		if !tags.ValidInstanceID(id) {
			return nil, fmt.Errorf("health: instances[%d]: %q is not an instance ID such as i-0abc1234def567890", i, id)
		}
	}
	got := map[string]InstanceHealth{}
	for _, batch := range chunks(ids, statusBatch) {
		if err := d.status(ctx, batch, got); err != nil {
			return nil, fmt.Errorf("health: %w", err)
		}
	}
	out := make([]InstanceHealth, len(ids))
	for i, id := range ids {
		h, ok := got[id]
		if !ok {
			h = InstanceHealth{InstanceID: id, Condition: Pending, Reason: "no status reported yet"}
		}
		out[i] = h
	}
	return out, nil
}

// status describes one batch. EC2 fails the whole call with
// InvalidInstanceID.NotFound when one ID is unknown; the batch is then
// asked one ID at a time and the unknown ones are Gone.
func (d *Drainer) status(ctx context.Context, batch []string, got map[string]InstanceHealth) error {
	res, err := d.EC2.DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{InstanceIds: batch, IncludeAllInstances: aws.Bool(true)})
	if awsclient.ErrorCode(err) == "InvalidInstanceID.NotFound" {
		if len(batch) == 1 {
			got[batch[0]] = InstanceHealth{InstanceID: batch[0], Condition: Gone, Reason: "EC2 does not know the instance (InvalidInstanceID.NotFound)"}
			return nil
		}
		for _, id := range batch {
			if err := d.status(ctx, []string{id}, got); err != nil {
				return err
			}
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("describe instance status %s: %w", strings.Join(batch, ","), err)
	}
	for _, s := range res.InstanceStatuses {
		h := classify(s)
		got[h.InstanceID] = h
	}
	// With instance IDs the answer is one page (MaxResults cannot be combined).
	return nil
}

func classify(s ec2types.InstanceStatus) InstanceHealth {
	h := InstanceHealth{InstanceID: aws.ToString(s.InstanceId)}
	if s.InstanceState != nil {
		h.State = string(s.InstanceState.Name)
	}
	var inst, sys ec2types.SummaryStatus
	if s.InstanceStatus != nil {
		inst = s.InstanceStatus.Status
	}
	if s.SystemStatus != nil {
		sys = s.SystemStatus.Status
	}
	switch h.State {
	case "running":
		switch {
		case inst == ec2types.SummaryStatusOk && sys == ec2types.SummaryStatusOk:
			h.Condition = OK
		case inst == ec2types.SummaryStatusImpaired || sys == ec2types.SummaryStatusImpaired:
			h.Condition = Impaired
			h.Reason = fmt.Sprintf("running, status checks failed: instance %s, system %s", inst, sys)
		default:
			h.Condition = Pending
			h.Reason = fmt.Sprintf("running, status checks: instance %s, system %s", inst, sys)
		}
	case "pending", "stopping":
		h.Condition, h.Reason = Pending, h.State
	case "stopped":
		h.Condition, h.Reason = Stopped, "stopped: not started again (a reboot passes through stopped briefly)"
	default: // shutting-down, terminated
		h.Condition, h.Reason = Gone, h.State
	}
	return h
}
