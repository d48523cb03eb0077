package backup

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/trigger"
)

// What the rollout workflow (pkg/rollout) shares with the backup: the same
// selection, the same slot listing and, through Run with InstanceIDs, the
// same CreateImage (names, tags in the call, duplicate path, opt-out tag).

// Instance is one selected instance.
type Instance struct {
	ID   string
	Tags map[string]string
	// NoReboot: the instance opted out with amibackup:no-reboot=true (any
	// letter case); BadNoReboot is another value of that tag (a warning,
	// the instance is rebooted).
	NoReboot    bool
	BadNoReboot string
}

// Select lists the instances req selects as Run does (the policy's tag, a
// manual request's IDs as one more filter), in the states Run selects
// (running, stopped) and those of a reboot under way (pending, stopping):
// a workflow must know a member that is down, e.g. rebooted by an earlier
// execution of the slot, to keep its group's count.
func (b *Backuper) Select(ctx context.Context, req trigger.Backup) ([]Instance, error) {
	pol, ok := b.Config.Policy(req.Policy)
	if !ok {
		return nil, fmt.Errorf("backup: unknown policy %q", req.Policy)
	}
	ts, err := b.selectIn(ctx, pol, req, []string{"pending", "running", "stopping", "stopped"})
	if err != nil {
		return nil, err
	}
	out := make([]Instance, len(ts))
	for i, t := range ts {
		out[i] = Instance{ID: t.id, Tags: t.tags, NoReboot: t.noReboot, BadNoReboot: t.badNoReboot}
	}
	return out, nil
}

// Done returns the instances whose image of req's slot exists and counts
// as this backup (ours, this policy and instance, pending or available):
// the ones Run would report as already done without a CreateImage. A
// repeated execution for the slot takes nothing of these out of service.
func (b *Backuper) Done(ctx context.Context, req trigger.Backup) (map[string]string, error) {
	pol, ok := b.Config.Policy(req.Policy)
	if !ok {
		return nil, fmt.Errorf("backup: unknown policy %q", req.Policy)
	}
	existing, err := b.slotImages(ctx, pol, req)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, im := range existing {
		id := awsclient.TagMap(im.Tags)[tags.InstanceID]
		if id != "" && (im.State == types.ImageStatePending || im.State == types.ImageStateAvailable) && b.notThisBackup(im, pol.Name, id) == "" {
			out[id] = aws.ToString(im.ImageId)
		}
	}
	return out, nil
}
