package waves

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/amibackup/amibackup/pkg/config"
)

func asg(name string, more ...string) map[string]string {
	t := map[string]string{ASGTag: name}
	for i := 0; i+1 < len(more); i += 2 {
		t[more[i]] = more[i+1]
	}
	return t
}

func tagged(kv ...string) map[string]string {
	t := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		t[kv[i]] = kv[i+1]
	}
	return t
}

// groupOf maps every instance to its group's key ("" ungrouped) and size.
func groupOf(p *Plan) map[string]string {
	m := map[string]string{}
	for _, g := range p.Groups {
		for _, id := range g.Members {
			m[id] = fmt.Sprintf("%s/%d", g.Key, len(g.Members))
		}
	}
	return m
}

func TestGrouping(t *testing.T) {
	withTag := &config.Availability{GroupBy: []string{"asg", "targetGroup", "tag:Service"}}
	tests := []struct {
		name      string
		avail     *config.Availability
		instances []Instance
		want      map[string]string // instance -> key/size
	}{
		{"asg members form a group", nil, []Instance{
			{ID: "i-1", Tags: asg("web")}, {ID: "i-2", Tags: asg("web")}, {ID: "i-3", Tags: asg("db")}},
			map[string]string{"i-1": "asg:web/2", "i-2": "asg:web/2", "i-3": "asg:db/1"}},
		{"asg precedence names the group", withTag, []Instance{
			{ID: "i-1", Tags: asg("web", "Service", "shop"), TargetGroups: []string{"tg-a"}},
			{ID: "i-2", Tags: asg("web", "Service", "shop"), TargetGroups: []string{"tg-a"}}},
			map[string]string{"i-1": "asg:web/2", "i-2": "asg:web/2"}},
		{"two target groups link", nil, []Instance{
			{ID: "i-1", TargetGroups: []string{"tg-b"}}, {ID: "i-2", TargetGroups: []string{"tg-b", "tg-c"}},
			{ID: "i-3", TargetGroups: []string{"tg-c"}}, {ID: "i-4", TargetGroups: []string{"tg-d"}}},
			map[string]string{"i-1": "tg:tg-b/3", "i-2": "tg:tg-b/3", "i-3": "tg:tg-b/3", "i-4": "tg:tg-d/1"}},
		// A target group with an Auto Scaling group's members and a
		// stand-alone instance is one group: rebooting one of each at once
		// would take two of its targets down.
		{"target group links asg members and stand-alone instances", nil, []Instance{
			{ID: "i-1", Tags: asg("web"), TargetGroups: []string{"tg-a"}}, {ID: "i-2", Tags: asg("web"), TargetGroups: []string{"tg-a"}},
			{ID: "i-3", TargetGroups: []string{"tg-a"}}},
			map[string]string{"i-1": "asg:web/3", "i-2": "asg:web/3", "i-3": "asg:web/3"}},
		{"tag groups", withTag, []Instance{
			{ID: "i-1", Tags: tagged("Service", "shop")}, {ID: "i-2", Tags: tagged("Service", "shop")},
			{ID: "i-3", Tags: tagged("Service", "blog")}, {ID: "i-4", Tags: tagged("Service", "")}, {ID: "i-5"}},
			map[string]string{"i-1": "tag:Service=shop/2", "i-2": "tag:Service=shop/2", "i-3": "tag:Service=blog/1", "i-4": "/1", "i-5": "/1"}},
		{"tag links two asgs", withTag, []Instance{
			{ID: "i-1", Tags: asg("blue", "Service", "shop")}, {ID: "i-2", Tags: asg("green", "Service", "shop")}},
			map[string]string{"i-1": "asg:blue/2", "i-2": "asg:blue/2"}},
		{"tags are ignored unless configured", nil, []Instance{
			{ID: "i-1", Tags: tagged("Service", "shop")}, {ID: "i-2", Tags: tagged("Service", "shop")}},
			map[string]string{"i-1": "/1", "i-2": "/1"}},
		{"groupBy restricts the sources", &config.Availability{GroupBy: []string{"asg"}}, []Instance{
			{ID: "i-1", TargetGroups: []string{"tg-a"}}, {ID: "i-2", TargetGroups: []string{"tg-a"}}, {ID: "i-3", Tags: asg("web")}},
			map[string]string{"i-1": "/1", "i-2": "/1", "i-3": "asg:web/1"}},
		{"tags in listed order name the group", &config.Availability{GroupBy: []string{"tag:Team", "tag:App"}}, []Instance{
			{ID: "i-1", Tags: tagged("App", "a", "Team", "z")}, {ID: "i-2", Tags: tagged("App", "a")}},
			map[string]string{"i-1": "tag:Team=z/2", "i-2": "tag:Team=z/2"}},
		{"no group", nil, []Instance{{ID: "i-2"}, {ID: "i-1", Tags: tagged("Name", "x")}},
			map[string]string{"i-1": "/1", "i-2": "/1"}},
		{"all at once ignores groups", &config.Availability{Mode: config.ModeAllAtOnce}, []Instance{
			{ID: "i-1", Tags: asg("web")}, {ID: "i-2", Tags: asg("web")}},
			map[string]string{"i-1": "/1", "i-2": "/1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(tt.instances, tt.avail, Options{})
			if err != nil {
				t.Fatal(err)
			}
			got := groupOf(p)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("groups %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	_, err := New([]Instance{{ID: "i-1"}, {ID: ""}, {ID: "i-1"}}, nil, Options{})
	if err == nil || !strings.Contains(err.Error(), "instance 1 has no ID") || !strings.Contains(err.Error(), "i-1 is listed twice") {
		t.Errorf("err = %v", err)
	}
}

func fleet(groups map[string]int, ungrouped int) []Instance {
	var ins []Instance
	for name, n := range groups {
		for i := range n {
			ins = append(ins, Instance{ID: fmt.Sprintf("i-%s%03d", name, i), Tags: asg(name)})
		}
	}
	for i := range ungrouped {
		ins = append(ins, Instance{ID: fmt.Sprintf("i-u%03d", i)})
	}
	return ins
}

func TestWaves(t *testing.T) {
	tests := []struct {
		name       string
		avail      *config.Availability
		groups     map[string]int
		ungrouped  int
		waveCap    int
		waves      [][]string // expected waves
		lowerBound int
	}{
		{"largest group sets the waves, ungrouped fill the emptiest", nil, map[string]int{"a": 3, "b": 1}, 2, 0,
			[][]string{{"i-a000", "i-b000"}, {"i-a001", "i-u000"}, {"i-a002", "i-u001"}}, 3},
		{"count", &config.Availability{MaxUnavailable: config.MaxUnavailableCount(2)}, map[string]int{"a": 5}, 0, 0,
			[][]string{{"i-a000", "i-a001"}, {"i-a002", "i-a003"}, {"i-a004"}}, 3},
		{"percentage of 8 at 25% is 2", &config.Availability{MaxUnavailable: config.MaxUnavailablePercent(25)}, map[string]int{"a": 8}, 0, 0,
			[][]string{{"i-a000", "i-a001"}, {"i-a002", "i-a003"}, {"i-a004", "i-a005"}, {"i-a006", "i-a007"}}, 4},
		{"percentage of 3 at 25% is 1", &config.Availability{MaxUnavailable: config.MaxUnavailablePercent(25)}, map[string]int{"a": 3}, 0, 0,
			[][]string{{"i-a000"}, {"i-a001"}, {"i-a002"}}, 3},
		{"wave cap", nil, map[string]int{"a": 2, "b": 2}, 3, 3,
			[][]string{{"i-a000", "i-b000", "i-u000"}, {"i-a001", "i-b001", "i-u001"}, {"i-u002"}}, 3},
		{"cap binds the groups", nil, map[string]int{"a": 1, "b": 1, "c": 1}, 0, 2,
			[][]string{{"i-a000", "i-b000"}, {"i-c000"}}, 2},
		{"only ungrouped", nil, nil, 3, 0, [][]string{{"i-u000", "i-u001", "i-u002"}}, 1},
		{"all at once", &config.Availability{Mode: config.ModeAllAtOnce}, map[string]int{"a": 3}, 2, 2,
			[][]string{{"i-a000", "i-a001", "i-a002", "i-u000", "i-u001"}}, 1},
		{"empty", nil, nil, 0, 0, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(fleet(tt.groups, tt.ungrouped), tt.avail, Options{WaveCap: tt.waveCap})
			if err != nil {
				t.Fatal(err)
			}
			var got [][]string
			for w := range p.Waves {
				ids := p.Wave(w)
				slices.Sort(ids)
				got = append(got, ids)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.waves) || p.LowerBound != tt.lowerBound {
				t.Errorf("waves %v (lower bound %d), want %v (%d)", got, p.LowerBound, tt.waves, tt.lowerBound)
			}
		})
	}
}

// randomFleet: Auto Scaling groups, target groups (some instances in two),
// Service tags and ungrouped instances, in random order.
func randomFleet(r *rand.Rand, n int) []Instance {
	ins := make([]Instance, n)
	for i := range ins {
		in := Instance{ID: fmt.Sprintf("i-%017x", r.Uint64()>>4), Tags: map[string]string{}}
		switch r.IntN(5) {
		case 0:
			in.Tags[ASGTag] = fmt.Sprintf("asg-%d", r.IntN(n/8+1))
			if r.IntN(2) == 0 {
				in.TargetGroups = []string{fmt.Sprintf("tg-%d", r.IntN(n/6+1))}
			}
		case 1:
			for range 1 + r.IntN(2) {
				in.TargetGroups = append(in.TargetGroups, fmt.Sprintf("tg-%d", r.IntN(n/6+1)))
			}
		case 2:
			in.Tags["Service"] = fmt.Sprintf("svc-%d", r.IntN(n/10+1))
		}
		ins[i] = in
	}
	return ins
}

func randomAvailability(r *rand.Rand) *config.Availability {
	a := &config.Availability{GroupBy: [][]string{nil, {"asg"}, {"asg", "targetGroup", "tag:Service"}, {"tag:Service", "targetGroup"}}[r.IntN(4)]}
	switch r.IntN(3) {
	case 0:
		a.MaxUnavailable = config.MaxUnavailableCount(1 + r.IntN(3))
	case 1:
		a.MaxUnavailable = config.MaxUnavailablePercent(1 + r.IntN(100))
	}
	return a
}

// TestPlanProperties over random fleets: every instance exactly once, no
// wave with more than Max of a group or more than the cap, instances that
// share a link share a group and groups share no link, the fewest waves
// when the cap does not bind, the same plan for any input order, and a
// plan that survives Encode/Decode.
func TestPlanProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 13))
	for run := range 300 {
		ins := randomFleet(r, 1+r.IntN(300))
		a := randomAvailability(r)
		waveCap := []int{0, 1 + r.IntN(20)}[r.IntN(2)]
		p, err := New(ins, a, Options{WaveCap: waveCap})
		if err != nil {
			t.Fatal(err)
		}
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("run %d (%d instances, groupBy %v, max %v, cap %d): %s", run, len(ins), a.Sources(), a.MaxUnavailable, waveCap, fmt.Sprintf(format, args...))
		}
		if len(p.Slots) != len(ins) {
			fail("%d slots for %d instances", len(p.Slots), len(ins))
		}
		groupOfID := map[string]int{}
		for i, s := range p.Slots {
			if _, dup := groupOfID[s.ID]; dup {
				fail("%s planned twice", s.ID)
			}
			groupOfID[s.ID] = s.Group
			if i > 0 && s.Wave < p.Slots[i-1].Wave {
				fail("slots not in wave order")
			}
		}
		perWave := map[[2]int]int{}
		load := map[int]int{}
		for _, s := range p.Slots {
			perWave[[2]int{s.Wave, s.Group}]++
			load[s.Wave]++
		}
		for k, n := range perWave {
			if g := p.Groups[k[1]]; n > g.Max || g.Max != a.MaxUnavailableFor(len(g.Members)) && g.Key != "" {
				fail("wave %d holds %d of group %q (max %d)", k[0], n, g.Key, g.Max)
			}
		}
		for w, n := range load {
			if n > p.waveCap {
				fail("wave %d holds %d, cap %d", w, n, p.waveCap)
			}
		}
		// Links: same key -> same group; a keyed group's members are linked.
		byLink := map[string]int{}
		for _, in := range ins {
			for _, l := range links(in, a.Sources()) {
				if g, ok := byLink[l.key]; ok && g != groupOfID[in.ID] {
					fail("%s splits over two groups", l.key)
				}
				byLink[l.key] = groupOfID[in.ID]
			}
			if len(links(in, a.Sources())) == 0 && p.Groups[groupOfID[in.ID]].Key != "" {
				fail("%s has no link but is in group %q", in.ID, p.Groups[groupOfID[in.ID]].Key)
			}
		}
		if waveCap == 0 && p.Waves != p.LowerBound {
			fail("%d waves, lower bound %d", p.Waves, p.LowerBound)
		}
		shuffled := slices.Clone(ins)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		p2, _ := New(shuffled, a, Options{WaveCap: waveCap})
		b1, _ := p.Encode()
		b2, _ := p2.Encode()
		if !bytes.Equal(b1, b2) || !slices.Equal(p.Slots, p2.Slots) {
			fail("plan depends on input order")
		}
		d, err := Decode(b1)
		if err != nil || !slices.Equal(d.Slots, p.Slots) || d.Waves != p.Waves || d.LowerBound != p.LowerBound || d.Digest() != p.Digest() {
			fail("decode: %v", err)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	p, _ := New(fleet(map[string]int{"a": 2}, 1), nil, Options{})
	good, _ := p.Encode()
	if _, err := Decode(good); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"not gzip":       []byte(`{"v":1}`),
		"version":        gz(`{"v":2,"c":5,"g":[]}`),
		"no cap":         gz(`{"v":1,"g":[]}`),
		"unknown field":  gz(`{"v":1,"c":5,"g":[],"x":1}`),
		"empty group":    gz(`{"v":1,"c":5,"g":[{"k":"asg:a","m":1,"i":[]}]}`),
		"max too large":  gz(`{"v":1,"c":5,"g":[{"k":"asg:a","m":2,"i":["i-1"]}]}`),
		"duplicate":      gz(`{"v":1,"c":5,"g":[{"k":"asg:a","m":1,"i":["i-1","i-2"]},{"k":"","m":1,"i":["i-1"]}]}`),
		"order":          gz(`{"v":1,"c":5,"g":[{"k":"","m":1,"i":["i-3"]},{"k":"asg:a","m":1,"i":["i-1","i-2"]}]}`),
		"members order":  gz(`{"v":1,"c":5,"g":[{"k":"asg:a","m":1,"i":["i-2","i-1"]}]}`),
		"asgs order":     gz(`{"v":1,"c":5,"g":[{"k":"tag:S=x","m":1,"i":["i-1"],"a":["b","a"]}]}`),
		"asgs repeated":  gz(`{"v":1,"c":5,"g":[{"k":"tag:S=x","m":1,"i":["i-1"],"a":["a","a"]}]}`),
		"asgs empty":     gz(`{"v":1,"c":5,"g":[{"k":"tag:S=x","m":1,"i":["i-1"],"a":[""]}]}`),
		"asgs the key":   gz(`{"v":1,"c":5,"g":[{"k":"asg:a","m":1,"i":["i-1"],"a":["a"]}]}`),
		"asgs ungrouped": gz(`{"v":1,"c":5,"g":[{"k":"","m":1,"i":["i-1"],"a":["a"]}]}`),
	} {
		if _, err := Decode(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func gz(s string) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write([]byte(s))
	w.Close()
	return buf.Bytes()
}

// TestGroupASGs: a group lists the Auto Scaling groups of its members
// other than the one its key names (a run checks them before a member
// starts); an "asg:" group of one Auto Scaling group lists none and
// encodes as before (no field: zero bytes, the same digest); the list
// survives Encode/Decode and is part of the digest.
func TestGroupASGs(t *testing.T) {
	tagOnly := &config.Availability{GroupBy: []string{"tag:Service"}}
	tgOnly := &config.Availability{GroupBy: []string{"targetGroup"}}
	withTag := &config.Availability{GroupBy: []string{"asg", "targetGroup", "tag:Service"}}
	tests := []struct {
		name      string
		avail     *config.Availability
		instances []Instance
		want      map[string][]string // key -> AutoScalingGroups()
		asgs      map[string][]string // key -> ASGs (stored)
	}{
		{"asg-keyed, one Auto Scaling group: nothing stored", withTag, []Instance{
			{ID: "i-1", Tags: asg("web", "Service", "shop")}, {ID: "i-2", Tags: asg("web", "Service", "shop")}},
			map[string][]string{"asg:web": {"web"}}, map[string][]string{"asg:web": nil}},
		{"tag-keyed, members in two Auto Scaling groups", tagOnly, []Instance{
			{ID: "i-1", Tags: asg("blue", "Service", "shop")}, {ID: "i-2", Tags: asg("green", "Service", "shop")},
			{ID: "i-3", Tags: asg("green", "Service", "shop")}, {ID: "i-4", Tags: tagged("Service", "shop")},
			{ID: "i-5", Tags: tagged("Service", "blog")}},
			map[string][]string{"tag:Service=shop": {"blue", "green"}, "tag:Service=blog": nil},
			map[string][]string{"tag:Service=shop": {"blue", "green"}, "tag:Service=blog": nil}},
		{"target-group-keyed, members in an Auto Scaling group", tgOnly, []Instance{
			{ID: "i-1", Tags: asg("web"), TargetGroups: []string{"tg-a"}}, {ID: "i-2", Tags: asg("web"), TargetGroups: []string{"tg-a"}}},
			map[string][]string{"tg:tg-a": {"web"}}, map[string][]string{"tg:tg-a": {"web"}}},
		{"asg-keyed, linked to another Auto Scaling group (blue/green)", withTag, []Instance{
			{ID: "i-1", Tags: asg("blue", "Service", "shop")}, {ID: "i-2", Tags: asg("green", "Service", "shop")}},
			map[string][]string{"asg:blue": {"blue", "green"}}, map[string][]string{"asg:blue": {"green"}}},
		{"ungrouped member of an Auto Scaling group", tagOnly, []Instance{{ID: "i-1", Tags: asg("web")}},
			map[string][]string{"": nil}, map[string][]string{"": nil}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.instances, tc.avail, Options{})
			if err != nil {
				t.Fatal(err)
			}
			b, err := p.Encode()
			if err != nil {
				t.Fatal(err)
			}
			d, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if d.Digest() != p.Digest() {
				t.Errorf("digest %s after Decode, %s before", d.Digest(), p.Digest())
			}
			for _, g := range d.Groups {
				if got := g.AutoScalingGroups(); !slices.Equal(got, tc.want[g.Key]) || !slices.Equal(g.ASGs, tc.asgs[g.Key]) {
					t.Errorf("group %q: AutoScalingGroups %q, ASGs %q; want %q, %q", g.Key, got, g.ASGs, tc.want[g.Key], tc.asgs[g.Key])
				}
			}
			// The digest covers the list; nothing is written without one.
			without := *p
			without.digest = ""
			without.Groups = slices.Clone(p.Groups)
			stored := false
			for i := range without.Groups {
				stored = stored || len(without.Groups[i].ASGs) > 0
				without.Groups[i].ASGs = nil
			}
			if (without.Digest() != p.Digest()) != stored {
				t.Errorf("digest without the lists %s, with %s: want them different exactly when a list is stored (%v)", without.Digest(), p.Digest(), stored)
			}
			raw, _ := gzip.NewReader(bytes.NewReader(b))
			var js bytes.Buffer
			js.ReadFrom(raw)
			if strings.Contains(js.String(), `"a":[`) != stored {
				t.Errorf("encoded %s: an Auto Scaling group list written %v, stored %v", js.String(), !stored, stored)
			}
		})
	}
}
