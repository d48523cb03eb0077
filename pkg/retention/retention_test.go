package retention

import (
	"fmt"
	"math/rand"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

func mustLoc(t testing.TB, name string) *time.Location {
	t.Helper()
	l, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func img(id string, at time.Time, st State) Image {
	return Image{ID: id, InstanceID: "i-1", Policy: "p", Time: at, State: st}
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func deleted(p Plan) []string {
	var out []string
	for _, d := range p.Delete() {
		out = append(out, d.Image.ID)
	}
	sort.Strings(out)
	return out
}

func TestRulesAndFloors(t *testing.T) {
	now := utc("2026-11-24T12:00:00Z")
	day := func(n int) time.Time { return now.Add(-time.Duration(n) * 24 * time.Hour) }
	five := []Image{img("a", day(0), Available), img("b", day(1), Available), img("c", day(2), Available), img("d", day(3), Available), img("e", day(4), Available)}
	tests := []struct {
		name   string
		images []Image
		rules  Rules
		del    []string
	}{
		{"last 2", five, Rules{Last: 2, MinAvailable: 1}, []string{"c", "d", "e"}},
		{"within 2d keeps younger than 2 days", five, Rules{Within: 48 * time.Hour, MinAvailable: 1}, []string{"c", "d", "e"}},
		{"daily 3", five, Rules{Daily: 3, MinAvailable: 1}, []string{"d", "e"}},
		{"any rule keeps: last 1 or within 3d", five, Rules{Last: 1, Within: 72 * time.Hour, MinAvailable: 1}, []string{"d", "e"}},
		{"floor: newest available even if rules keep none", []Image{img("old", day(30), Available), img("older", day(31), Available)},
			Rules{Within: 24 * time.Hour, MinAvailable: 1}, []string{"older"}},
		{"floor: minAvailable 3", five, Rules{Last: 1, MinAvailable: 3}, []string{"d", "e"}},
		{"pending never deleted, failed always", []Image{img("p", day(9), Pending), img("f", day(0), Failed), img("a", day(1), Available), img("b", day(2), Available)},
			Rules{Last: 1, MinAvailable: 1}, []string{"b", "f"}},
		{"failed does not count towards floors", []Image{img("f1", day(0), Failed), img("f2", day(1), Failed), img("a", day(5), Available)},
			Rules{Within: time.Hour, MinAvailable: 1}, []string{"f1", "f2"}},
		{"image newer than the run is kept", []Image{img("future", now.Add(time.Hour), Available), img("a", day(0), Available), img("b", day(1), Available)},
			Rules{Last: 1, MinAvailable: 1}, []string{"b"}},
		{"unknown state treated as pending", []Image{img("x", day(40), State("disabled")), img("a", day(0), Available)},
			Rules{Last: 1, MinAvailable: 1}, nil},
		{"groups are independent", []Image{img("a", day(0), Available), img("b", day(1), Available),
			{ID: "c", InstanceID: "i-2", Policy: "p", Time: day(5), State: Available}},
			Rules{Last: 1, MinAvailable: 1}, []string{"b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := deleted(Evaluate(tt.images, tt.rules, now))
			if !slices.Equal(got, tt.del) {
				t.Fatalf("deleted %v, want %v", got, tt.del)
			}
		})
	}
}

// TestVerifiedFloor: the newest available image that passed a restore
// verification is kept whatever the rules say; a failed verification is
// reported and changes no verdict.
func TestVerifiedFloor(t *testing.T) {
	now := utc("2026-11-24T12:00:00Z")
	day := func(n int) time.Time { return now.Add(-time.Duration(n) * 24 * time.Hour) }
	verified := func(im Image, at time.Time) Image { im.Verified = at; return im }
	failed := func(im Image, reason string) Image { im.VerifyFailed, im.VerifyError = true, reason; return im }
	last1 := Rules{Last: 1, MinAvailable: 1}
	tests := []struct {
		name   string
		images []Image
		rules  Rules
		del    []string
		// floor is the image kept by the verified floor ("" for none).
		floor string
	}{
		{"newest unverified: the newest verified is kept too",
			[]Image{img("a", day(0), Available), img("b", day(1), Available), verified(img("c", day(2), Available), day(1)), img("d", day(3), Available)},
			last1, []string{"b", "d"}, "c"},
		{"newest failed verification: the older verified one is kept",
			[]Image{failed(img("a", day(0), Available), "no SSH within 10m"), verified(img("b", day(1), Available), day(1)), img("c", day(2), Available)},
			last1, []string{"c"}, "b"},
		{"only the newest verified: older verified images follow the rules",
			[]Image{img("a", day(0), Available), verified(img("b", day(1), Available), day(1)), verified(img("c", day(2), Available), day(2))},
			last1, []string{"c"}, "b"},
		{"newest is verified: the floors coincide",
			[]Image{verified(img("a", day(0), Available), day(0)), verified(img("b", day(1), Available), day(1))},
			last1, []string{"b"}, "a"},
		{"verified and failed tags together: not verified",
			[]Image{img("a", day(0), Available), failed(verified(img("b", day(1), Available), day(1)), "boot"), verified(img("c", day(2), Available), day(2))},
			last1, []string{"b"}, "c"},
		{"a failed image is never the verified floor",
			[]Image{img("a", day(0), Available), verified(img("f", day(1), Failed), day(1)), verified(img("b", day(2), Available), day(2))},
			last1, []string{"f"}, "b"},
		{"a failed verification alone deletes nothing",
			[]Image{failed(img("a", day(0), Available), "x"), failed(img("b", day(1), Available), "y"), img("c", day(2), Available)},
			Rules{Last: 2, MinAvailable: 1}, []string{"c"}, ""},
		{"no verified image: today's floors only",
			[]Image{img("a", day(0), Available), img("b", day(1), Available)},
			last1, []string{"b"}, ""},
		{"verified floor per instance",
			[]Image{img("a", day(0), Available), verified(img("b", day(1), Available), day(1)),
				{ID: "c", InstanceID: "i-2", Policy: "p", Time: day(0), State: Available}, {ID: "d", InstanceID: "i-2", Policy: "p", Time: day(1), State: Available}},
			last1, []string{"d"}, "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan := Evaluate(tt.images, tt.rules, now)
			if got := deleted(plan); !slices.Equal(got, tt.del) {
				t.Fatalf("deleted %v, want %v", got, tt.del)
			}
			for _, d := range plan.Decisions {
				isFloor := slices.ContainsFunc(d.Reasons, func(r string) bool { return strings.HasPrefix(r, "floor: newest verified (") })
				if isFloor != (d.Image.ID == tt.floor) {
					t.Errorf("%s: reasons %v, verified floor is %q", d.Image.ID, d.Reasons, tt.floor)
				}
				hasNote := slices.ContainsFunc(d.Notes, func(n string) bool { return strings.HasPrefix(n, "restore verification failed") })
				if hasNote != d.Image.VerifyFailed {
					t.Errorf("%s: notes %v, verify failed %v", d.Image.ID, d.Notes, d.Image.VerifyFailed)
				}
				if d.Image.VerifyFailed && d.Image.VerifyError != "" && !strings.Contains(d.Notes[0], d.Image.VerifyError) {
					t.Errorf("%s: note %q does not say why", d.Image.ID, d.Notes[0])
				}
			}
		})
	}
}

func TestReasonsExplainDecisions(t *testing.T) {
	now := utc("2026-11-24T12:00:00Z")
	p := Evaluate([]Image{img("a", now.Add(-time.Hour), Available), img("b", now.Add(-48*time.Hour), Available), img("f", now, Failed)},
		Rules{Last: 1, Daily: 1, MinAvailable: 1}, now)
	got := map[string][]string{}
	for _, d := range p.Decisions {
		got[d.Image.ID] = d.Reasons
	}
	if !slices.Contains(got["a"], "floor: newest available") || !slices.Contains(got["a"], "last 1") || !slices.Contains(got["a"], "daily 2026-11-24") {
		t.Errorf("a: %v", got["a"])
	}
	if !slices.Equal(got["b"], []string{"not kept by any rule"}) || !slices.Equal(got["f"], []string{"failed image"}) {
		t.Errorf("b: %v f: %v", got["b"], got["f"])
	}
}

// TestGFS400Days checks grandfather-father-son retention over 400 days of
// nightly backups at 03:00 Europe/Berlin against an independent oracle:
// the newest image of a week is its Sunday's, of a month its last day's, of
// a year its December 31st's (plus the newest image overall).
func TestGFS400Days(t *testing.T) {
	berlin := mustLoc(t, "Europe/Berlin")
	start := time.Date(2025, 10, 20, 3, 0, 0, 0, berlin)
	var images []Image
	for d := range 400 {
		at := start.AddDate(0, 0, d)
		images = append(images, img(at.Format("2006-01-02"), at.UTC(), Available))
	}
	newest := start.AddDate(0, 0, 399)
	now := newest.Add(time.Hour)
	rules := Rules{Daily: 14, Weekly: 8, Monthly: 12, Yearly: 10, MinAvailable: 1, Location: berlin}
	plan := Evaluate(images, rules, now.UTC())

	want := map[string]bool{}
	var days []time.Time
	for d := 399; d >= 0; d-- {
		days = append(days, start.AddDate(0, 0, d))
	}
	pick := func(n int, isLast func(time.Time) bool) {
		count := 0
		for i, at := range days {
			if i == 0 || isLast(at) {
				want[at.Format("2006-01-02")] = true
				count++
				if count == n {
					return
				}
			}
		}
	}
	pick(14, func(time.Time) bool { return true })
	pick(8, func(at time.Time) bool { return at.Weekday() == time.Sunday })
	pick(12, func(at time.Time) bool { return at.AddDate(0, 0, 1).Day() == 1 })
	pick(10, func(at time.Time) bool { return at.Month() == time.December && at.Day() == 31 })

	for _, d := range plan.Decisions {
		if d.Keep != want[d.Image.ID] {
			t.Errorf("%s: keep=%v want %v (%v)", d.Image.ID, d.Keep, want[d.Image.ID], d.Reasons)
		}
	}
	if n := len(plan.Keep()); n != len(want) {
		t.Errorf("kept %d, want %d", n, len(want))
	}
}

// TestCalendarInPolicyTimeZone: days, ISO weeks, months and years are those
// of the policy's time zone, across DST changes and year boundaries.
func TestCalendarInPolicyTimeZone(t *testing.T) {
	berlin := mustLoc(t, "Europe/Berlin")
	ny := mustLoc(t, "America/New_York")
	tests := []struct {
		name   string
		loc    *time.Location
		rules  Rules
		images []Image
		now    time.Time
		del    []string
	}{
		{"spring forward: 23:30Z is the next day in Berlin", berlin, Rules{Daily: 2},
			[]Image{img("27", utc("2026-03-27T12:00:00Z"), Available), img("28", utc("2026-03-28T22:30:00Z"), Available), img("29", utc("2026-03-28T23:30:00Z"), Available)},
			utc("2026-03-29T12:00:00Z"), []string{"27"}},
		{"same images in UTC", time.UTC, Rules{Daily: 2},
			[]Image{img("27", utc("2026-03-27T12:00:00Z"), Available), img("28", utc("2026-03-28T22:30:00Z"), Available), img("29", utc("2026-03-28T23:30:00Z"), Available)},
			utc("2026-03-29T12:00:00Z"), []string{"28"}},
		{"fall back: the repeated hour is one day", berlin, Rules{Daily: 2},
			[]Image{img("24", utc("2026-10-24T01:30:00Z"), Available), img("cest", utc("2026-10-25T00:30:00Z"), Available), img("cet", utc("2026-10-25T01:30:00Z"), Available)},
			utc("2026-10-25T12:00:00Z"), []string{"cest"}},
		{"New York DST: local midnight moves", ny, Rules{Daily: 1, Last: 1},
			[]Image{img("a", utc("2026-03-08T04:30:00Z"), Available), img("b", utc("2026-03-08T05:30:00Z"), Available)},
			utc("2026-03-09T00:00:00Z"), []string{"a"}},
		{"ISO week 53 spans new year", time.UTC, Rules{Weekly: 2},
			[]Image{img("dec28", utc("2026-12-28T03:00:00Z"), Available), img("dec31", utc("2026-12-31T03:00:00Z"), Available),
				img("jan1", utc("2027-01-01T03:00:00Z"), Available), img("jan4", utc("2027-01-04T03:00:00Z"), Available)},
			utc("2027-01-05T00:00:00Z"), []string{"dec28", "dec31"}},
		{"new year in Berlin: monthly and yearly", berlin, Rules{Monthly: 2, Yearly: 1},
			[]Image{img("dec15", utc("2026-12-15T12:00:00Z"), Available), img("dec1", utc("2026-12-01T12:00:00Z"), Available), img("newyear", utc("2026-12-31T23:30:00Z"), Available)},
			utc("2027-01-02T00:00:00Z"), []string{"dec1"}},
		{"new year in UTC: same images", time.UTC, Rules{Monthly: 2, Yearly: 1},
			[]Image{img("dec15", utc("2026-12-15T12:00:00Z"), Available), img("dec1", utc("2026-12-01T12:00:00Z"), Available), img("newyear", utc("2026-12-31T23:30:00Z"), Available)},
			utc("2027-01-02T00:00:00Z"), []string{"dec1", "dec15"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.rules.Location, tt.rules.MinAvailable = tt.loc, 1
			if got := deleted(Evaluate(tt.images, tt.rules, tt.now)); !slices.Equal(got, tt.del) {
				t.Fatalf("deleted %v, want %v", got, tt.del)
			}
		})
	}
}

// TestFloorsHoldForRandomInputs is a property test over random histories
// and rules.
func TestFloorsHoldForRandomInputs(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	now := utc("2026-11-24T00:00:00Z")
	states := []State{Available, Available, Available, Pending, Failed}
	for iter := range 2000 {
		var images []Image
		for i := range rng.Intn(30) {
			im := Image{ID: fmt.Sprintf("ami-%d", i), InstanceID: fmt.Sprintf("i-%d", rng.Intn(3)), Policy: "p",
				Time: now.Add(-time.Duration(rng.Intn(800*24)) * time.Hour), State: states[rng.Intn(len(states))]}
			switch rng.Intn(4) {
			case 0:
				im.Verified = im.Time.Add(time.Hour)
			case 1:
				im.VerifyFailed, im.VerifyError = true, "boot failed"
				if rng.Intn(2) == 0 {
					im.Verified = im.Time.Add(time.Hour) // an earlier pass: still not verified
				}
			}
			images = append(images, im)
		}
		r := Rules{Last: rng.Intn(3), Within: time.Duration(rng.Intn(100)) * time.Hour, Daily: rng.Intn(4), Weekly: rng.Intn(3),
			Monthly: rng.Intn(3), Yearly: rng.Intn(2), MinAvailable: 1 + rng.Intn(3), Location: time.UTC}
		plan := Evaluate(images, r, now)
		if len(plan.Decisions) != len(images) {
			t.Fatalf("iter %d: %d decisions for %d images", iter, len(plan.Decisions), len(images))
		}
		keptAvail, avail, newest, newestVerified := map[string]int{}, map[string]int{}, map[string]Image{}, map[string]Image{}
		keep := map[string]bool{}
		for _, d := range plan.Decisions {
			keep[d.Image.ID] = d.Keep
			im := d.Image
			switch im.State {
			case Pending:
				if !d.Keep {
					t.Fatalf("iter %d: pending %s deleted", iter, im.ID)
				}
			case Failed:
				if d.Keep {
					t.Fatalf("iter %d: failed %s kept", iter, im.ID)
				}
			case Available:
				avail[im.InstanceID]++
				if d.Keep {
					keptAvail[im.InstanceID]++
				}
				if n, ok := newest[im.InstanceID]; !ok || im.Time.After(n.Time) {
					newest[im.InstanceID] = im
				}
				if n, ok := newestVerified[im.InstanceID]; im.verified() && (!ok || im.Time.After(n.Time)) {
					newestVerified[im.InstanceID] = im
				}
			}
		}
		for inst, n := range avail {
			if keptAvail[inst] < min(n, r.MinAvailable) {
				t.Fatalf("iter %d: %s keeps %d of %d available, minAvailable %d", iter, inst, keptAvail[inst], n, r.MinAvailable)
			}
			for _, d := range plan.Decisions {
				if d.Image.ID == newest[inst].ID && !d.Keep {
					t.Fatalf("iter %d: newest available %s of %s deleted", iter, d.Image.ID, inst)
				}
			}
		}
		for inst, im := range newestVerified {
			if !keep[im.ID] {
				t.Fatalf("iter %d: newest verified %s of %s deleted", iter, im.ID, inst)
			}
		}
		// A failed verification changes no verdict: the same history with
		// those images merely unverified gets the same plan.
		plain := slices.Clone(images)
		for i := range plain {
			if plain[i].VerifyFailed {
				plain[i].VerifyFailed, plain[i].VerifyError, plain[i].Verified = false, "", time.Time{}
			}
		}
		for _, d := range Evaluate(plain, r, now).Decisions {
			if d.Keep != keep[d.Image.ID] {
				t.Fatalf("iter %d: %s keep=%v without its failed verification, %v with it", iter, d.Image.ID, d.Keep, keep[d.Image.ID])
			}
		}
	}
}

func TestValidate(t *testing.T) {
	if Validate(Rules{MinAvailable: 1}) == nil {
		t.Error("rules keeping nothing accepted")
	}
	if Validate(Rules{Daily: -1, Last: 1, MinAvailable: 1}) == nil {
		t.Error("negative count accepted")
	}
	if Validate(Rules{Daily: 1, MinAvailable: 0}) == nil {
		t.Error("minAvailable 0 accepted")
	}
	if err := Validate(Rules{Weekly: 1, MinAvailable: 1}); err != nil {
		t.Error(err)
	}
}

func BenchmarkEvaluate10k(b *testing.B) {
	now := utc("2026-11-24T00:00:00Z")
	var images []Image
	for i := range 10000 {
		images = append(images, Image{ID: fmt.Sprint(i), InstanceID: fmt.Sprintf("i-%d", i%100), Policy: "p",
			Time: now.Add(-time.Duration(i/100) * 24 * time.Hour), State: Available})
	}
	r := Rules{Daily: 14, Weekly: 8, Monthly: 12, Yearly: 10, MinAvailable: 1, Location: mustLoc(b, "Europe/Berlin")}
	b.ReportAllocs()
	for b.Loop() {
		Evaluate(images, r, now)
	}
}
