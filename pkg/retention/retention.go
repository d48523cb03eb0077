// Package retention decides which backups to keep. It is pure (no AWS):
// given images with their backup times and states, the rules and a clock,
// it returns a plan saying for every image whether it is kept and why.
//
// An image is kept if any rule keeps it. Floors hold whatever the rules
// say: the newest available image of every instance, the newest available
// image of every instance that passed a restore verification, at least
// MinAvailable available images per instance, every pending image, and every
// image newer than the run itself are kept. Failed images are always deleted
// and never count towards a floor. A failed restore verification is
// reported (Decision.Notes), never a reason to delete by itself.
package retention

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/tags"
)

// State of an image.
type State string

// States.
const (
	Available State = "available"
	Pending   State = "pending"
	Failed    State = "failed"
)

// Image is one backup as retention sees it.
type Image struct {
	ID, InstanceID, Policy string
	// Time is the backup's slot (the amibackup:time tag).
	Time  time.Time
	State State
	// Verified is when the image last passed a restore verification (zero:
	// never verified).
	Verified time.Time
	// VerifyFailed marks an image whose last restore verification failed,
	// for the reason VerifyError. It is not verified, whatever Verified
	// says (the two tags come from different runs and carry no order; the
	// safe reading is the one that makes another image the verified floor),
	// and the rules decide it like any other image.
	VerifyFailed bool
	VerifyError  string
}

// verified says whether the image counts for the verified floor.
func (im Image) verified() bool {
	return tags.Verification{At: im.Verified, Failed: im.VerifyFailed}.Holds()
}

// Rules of one policy.
type Rules struct {
	Last                           int
	Within                         time.Duration
	Daily, Weekly, Monthly, Yearly int
	// MinAvailable available images per instance are always kept (>= 1).
	MinAvailable int
	// Location is the policy's time zone for calendar periods.
	Location *time.Location
}

// RulesFromConfig converts a policy's retention and time zone.
func RulesFromConfig(r config.Retention, timeZone string) (Rules, error) {
	loc, err := time.LoadLocation(timeZone)
	if err != nil {
		return Rules{}, fmt.Errorf("retention: time zone %q: %w", timeZone, err)
	}
	rules := Rules{Last: r.Last, Within: r.Within.D(), Daily: r.Daily, Weekly: r.Weekly, Monthly: r.Monthly,
		Yearly: r.Yearly, MinAvailable: r.MinAvailable, Location: loc}
	return rules, Validate(rules)
}

// RecoveryRules are the rules of a recovery deployment's copies (policy
// config.CopyPolicy), in UTC: the copy function and prune must agree.
func RecoveryRules(r *config.Recovery) (Rules, error) {
	return RulesFromConfig(r.Retention, config.DefaultTimeZone)
}

// Validate rejects rules that keep nothing beyond the floors or are negative.
func Validate(r Rules) error {
	var errs []error
	if r.Last < 0 || r.Daily < 0 || r.Weekly < 0 || r.Monthly < 0 || r.Yearly < 0 || r.Within < 0 {
		errs = append(errs, errors.New("retention: counts and durations must not be negative"))
	}
	if r.Last == 0 && r.Within == 0 && r.Daily == 0 && r.Weekly == 0 && r.Monthly == 0 && r.Yearly == 0 {
		errs = append(errs, errors.New("retention: the rules keep nothing: set at least one of last, within, daily, weekly, monthly, yearly"))
	}
	if r.MinAvailable < 1 {
		errs = append(errs, errors.New("retention: minAvailable must be at least 1"))
	}
	return errors.Join(errs...)
}

// Decision is the verdict on one image.
type Decision struct {
	Image Image
	Keep  bool
	// Reasons lists every rule or floor that keeps the image, or why it is deleted.
	Reasons []string
	// Notes report what an operator should know about the image without
	// changing the verdict (a failed restore verification).
	Notes []string
}

// Plan is the outcome for a set of images.
type Plan struct {
	Decisions []Decision
}

// Delete returns the decisions to delete.
func (p Plan) Delete() []Decision {
	return slices.DeleteFunc(slices.Clone(p.Decisions), func(d Decision) bool { return d.Keep })
}

// Keep returns the decisions to keep.
func (p Plan) Keep() []Decision {
	return slices.DeleteFunc(slices.Clone(p.Decisions), func(d Decision) bool { return !d.Keep })
}

type groupKey struct{ policy, instance string }

// Evaluate applies the rules at time now. Images are grouped by policy and
// instance; decisions come out per group (in order of first appearance
// sorted by policy, instance), newest first within a group.
func Evaluate(images []Image, rules Rules, now time.Time) Plan {
	if rules.Location == nil {
		rules.Location = time.UTC
	}
	if rules.MinAvailable < 1 {
		rules.MinAvailable = 1
	}
	groups := map[groupKey][]Image{}
	var keys []groupKey
	for _, im := range images {
		k := groupKey{im.Policy, im.InstanceID}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], im)
	}
	slices.SortFunc(keys, func(a, b groupKey) int {
		return cmp.Or(cmp.Compare(a.policy, b.policy), cmp.Compare(a.instance, b.instance))
	})
	var plan Plan
	for _, k := range keys {
		plan.Decisions = append(plan.Decisions, evaluateGroup(groups[k], rules, now)...)
	}
	return plan
}

func evaluateGroup(images []Image, r Rules, now time.Time) []Decision {
	slices.SortFunc(images, func(a, b Image) int {
		return cmp.Or(b.Time.Compare(a.Time), cmp.Compare(a.ID, b.ID))
	})
	ds := make([]Decision, len(images))
	var avail []int // indexes of available images, newest first
	for i, im := range images {
		ds[i].Image = im
		switch {
		case im.State == Failed:
			// Failed images are useless and hold snapshots: deleted even if a
			// rule would keep them by time.
		case im.State == Pending:
			ds[i].keep("pending: never deleted")
		case im.State != Available:
			// invalid, transient, error, disabled...: nothing to reason about,
			// so nothing to delete.
			ds[i].keep(fmt.Sprintf("state %s: kept (only available and failed images are decided)", im.State))
		case im.Time.IsZero():
			ds[i].keep("no backup time: kept")
		case im.Time.After(now):
			ds[i].keep("newer than this run: kept")
		default:
			avail = append(avail, i)
		}
	}
	// The newest verified image is the last one known to restore: kept
	// whatever the rules say, so a run of unverifiable or failing newer
	// backups cannot age it out.
	if n := slices.IndexFunc(avail, func(i int) bool { return images[i].verified() }); n >= 0 {
		i := avail[n]
		ds[i].keep("floor: newest verified (" + images[i].Verified.UTC().Format(time.RFC3339) + ")")
	}
	for n, i := range avail {
		if n == 0 {
			ds[i].keep("floor: newest available")
		}
		if n < r.MinAvailable && n > 0 {
			ds[i].keep(fmt.Sprintf("floor: minAvailable %d", r.MinAvailable))
		}
		if n < r.Last {
			ds[i].keep(fmt.Sprintf("last %d", r.Last))
		}
		if r.Within > 0 && now.Sub(images[i].Time) < r.Within {
			ds[i].keep("within " + config.Duration(r.Within).String())
		}
	}
	periods := []struct {
		name  string
		count int
		key   func(time.Time) string
	}{
		{"daily", r.Daily, func(t time.Time) string { return t.Format("2006-01-02") }},
		{"weekly", r.Weekly, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%04d-W%02d", y, w) }},
		{"monthly", r.Monthly, func(t time.Time) string { return t.Format("2006-01") }},
		{"yearly", r.Yearly, func(t time.Time) string { return t.Format("2006") }},
	}
	for _, p := range periods {
		if p.count == 0 {
			continue
		}
		// The newest image of each of the p.count most recent periods that
		// have an image (restic's and borg's --keep-daily semantics).
		last, kept := "", 0
		for _, i := range avail {
			k := p.key(images[i].Time.In(r.Location))
			if k == last {
				continue
			}
			last = k
			ds[i].keep(p.name + " " + k)
			kept++
			if kept == p.count {
				break
			}
		}
	}
	for i := range ds {
		if im := images[i]; im.VerifyFailed {
			note := "restore verification failed"
			if im.VerifyError != "" {
				note += ": " + im.VerifyError
			}
			ds[i].Notes = append(ds[i].Notes, note+" (reported; the rules decide this image as any other)")
		}
		if !ds[i].Keep {
			if images[i].State == Failed {
				ds[i].Reasons = []string{"failed image"}
			} else {
				ds[i].Reasons = []string{"not kept by any rule"}
			}
		}
	}
	return ds
}

func (d *Decision) keep(reason string) {
	d.Keep = true
	d.Reasons = append(d.Reasons, reason)
}
