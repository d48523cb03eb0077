package verify

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/metrics"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/tags"
)

// Summary is what finish returns: the run summary's bounded view (done:
// verified images, failed: failed and not tested ones with the reason,
// skipped: images deregistered meanwhile, notReached: images the run never
// booted) and the verification's own counts.
type Summary struct {
	runner.View
	Run    string `json:"run"`
	Plan   string `json:"plan,omitempty"`
	Images Counts `json:"images"`
	// Swept: leftover verification instances of earlier runs terminated.
	Swept int `json:"swept"`
	// InstancesLeft: this run's instances and leftovers still alive.
	InstancesLeft int `json:"instancesLeft"`
	// VerifiedAgeHours: over the policy's instances, the age of the oldest
	// "newest verified image" (an instance without one counts from its
	// oldest image), after this run. Absent when the policy has no images.
	VerifiedAgeHours *float64 `json:"verifiedAgeHours,omitempty"`
}

// Counts of the images, exact.
type Counts struct {
	// Candidates: the policy's instances with an available image.
	Candidates int `json:"candidates"`
	// AlreadyVerified: candidates whose newest image is verified already.
	AlreadyVerified int `json:"alreadyVerified"`
	// NotSampled: left out by the sample or MaxImages.
	NotSampled int `json:"notSampled"`
	Planned    int `json:"planned"`
	Verified   int `json:"verified"`
	Failed     int `json:"failed"`
	NotTested  int `json:"notTested"`
	Gone       int `json:"gone"`
	NotReached int `json:"notReached"`
}

// Finish reports the run: the summary (logged through runner.Summary),
// the metrics per policy (ImagesVerified, VerifyFailures: failed, not
// tested and not reached images, VerifiedAgeHours, VerifyInstancesLeft:
// this run's instances and leftovers still alive, VerifyDuration) and an
// error when an image failed or was not tested, or instances are left.
func (v *Verifier) Finish(ctx context.Context, st *State) (*Summary, error) {
	l, err := v.load(st)
	if err != nil {
		return nil, err
	}
	now := v.Clock()()
	slot, _ := tags.ParseTime(st.Slot)
	rs := &runner.Summary{Function: Function, Deployment: v.Config.Deployment, Policy: st.Policy, Trigger: st.Trigger,
		Slot: slot, DryRun: st.DryRun, Selected: len(l.plan)}
	reasons := map[int]string{}
	for _, o := range st.Failures {
		reasons[o.Image] = o.Reason
	}
	for i, b := range l.prog {
		im := l.plan[i]
		e := runner.Entry{ID: im.ID, Detail: cmp.Or(im.Instance, "-")}
		switch b {
		case statusVerified:
			rs.AddDone(e)
		case statusFailed, statusNotTested:
			e.Detail = cmp.Or(reasons[i], "reason in the step log (only the first failures are kept in the state)")
			if im.Instance != "" {
				e.Detail = im.Instance + ": " + e.Detail
			}
			rs.AddFailed(e)
		case statusGone:
			e.Detail = "deregistered or unavailable since the listing"
			rs.AddSkipped(e)
		case statusQueued, statusInFlight:
			if !st.DryRun {
				runner.AddNotReached(rs, []string{im.ID}, func(s string) string { return s })
			}
		}
	}
	for _, n := range st.Notes {
		rs.Warn("%s", n)
	}
	leftIDs := st.Left
	if !st.DryRun {
		run := v.Job.Start(1)
		wctx, cancel := run.WorkContext(ctx)
		defer cancel()
		ids, err := v.instancesLeft(wctx, st, now)
		if err != nil {
			rs.Warn("counting the instances left: %v", err)
		} else {
			leftIDs = ids
		}
	}
	left := len(leftIDs)
	rs.DurationMS = now.Sub(time.Unix(st.Began, 0)).Milliseconds()
	sum := &Summary{Run: st.Run, Plan: st.PlanText, Swept: st.Swept, InstancesLeft: left,
		Images: Counts{Candidates: st.Candidates, AlreadyVerified: st.Verified, NotSampled: st.NotSampled, Planned: len(l.plan),
			Verified: l.count(statusVerified), Failed: l.count(statusFailed), NotTested: l.count(statusNotTested),
			Gone: l.count(statusGone), NotReached: len(rs.NotReached)}}
	c := sum.Images
	if base, ok := ageBase(l); ok {
		h := math.Round(now.Sub(time.Unix(base, 0)).Hours()*100) / 100
		sum.VerifiedAgeHours = &h
	}
	if v.Metrics != nil && !st.DryRun {
		ms := []emf.Metric{
			emf.CountOf(metrics.ImagesVerified, c.Verified),
			emf.CountOf(metrics.VerifyFailures, c.Failed+c.NotTested+c.NotReached),
			emf.CountOf(metrics.VerifyInstancesLeft, left),
			{Name: metrics.VerifyDuration, Unit: emf.Milliseconds, Value: float64(rs.DurationMS)},
		}
		if sum.VerifiedAgeHours != nil {
			// CloudWatch has no hour unit: "None", the name says hours.
			ms = append(ms, emf.Metric{Name: metrics.VerifiedAgeHours, Unit: "None", Value: *sum.VerifiedAgeHours})
		}
		if err := v.Metrics.Emit(now, map[string]string{metrics.Dimension: st.Policy}, ms...); err != nil {
			l.log.Error("emit metrics", "error", err.Error())
		}
	}
	rs.Log(ctx, l.log)
	sum.View = rs.View()
	l.log.Info("verify summary", "images", c, "swept", sum.Swept, "instancesLeft", sum.InstancesLeft, "verifiedAgeHours", sum.VerifiedAgeHours)
	var errs []string
	if err := rs.Err(); err != nil {
		errs = append(errs, err.Error())
	}
	if left > 0 {
		errs = append(errs, fmt.Sprintf("%d verification instances still running after cleanup (%s): terminate them (tags %s=%s, %s)",
			left, strings.Join(first(leftIDs, 5), ", "), tags.ManagedBy, v.Config.Deployment, tags.VerifyOf))
	}
	if len(errs) > 0 {
		return sum, fmt.Errorf("verify %s: %s", st.Run, strings.Join(errs, "; "))
	}
	return sum, nil
}

// instancesLeft counts the policy's verification instances still alive
// that cleanup should have ended: this execution's and leftovers.
func (v *Verifier) instancesLeft(ctx context.Context, st *State, now time.Time) ([]string, error) {
	live, err := v.listOurs(ctx, liveStates, nil)
	if err != nil {
		return nil, err
	}
	prefix := tokenPrefix(st)
	var ids []string
	for _, in := range live {
		id := aws.ToString(in.InstanceId)
		if awsclient.TagMap(in.Tags)[tags.Policy] != st.Policy {
			continue
		}
		if strings.HasPrefix(aws.ToString(in.ClientToken), prefix) || slices.Contains(st.Terminate, id) || v.leftover(in, now) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// ageBase is the oldest "newest verified image" creation time over the
// policy's instances, with this run's verifications applied.
func ageBase(l *loaded) (int64, bool) {
	type inst struct {
		base     int64
		verified bool
	}
	per := map[string]*inst{}
	for i, im := range l.plan {
		key := cmp.Or(im.Instance, im.ID)
		p := per[key]
		if p == nil {
			p = &inst{base: im.Base, verified: !im.Unverified}
			per[key] = p
		}
		if l.prog[i] == statusVerified {
			if !p.verified || im.Created > p.base {
				p.base = im.Created
			}
			p.verified = true
		}
	}
	base, ok := l.st.AgeBase, l.st.AgeBase != 0
	for _, p := range per {
		if !ok || p.base < base {
			base, ok = p.base, true
		}
	}
	return base, ok
}
