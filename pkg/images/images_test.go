package images

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/tags"
)

func TestNameIsDeterministicAndValid(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	slot := time.Date(2026, 11, 24, 4, 0, 0, 0, berlin) // 03:00 UTC
	tests := []struct {
		policy, instance string
		want             string
	}{
		{"nightly", "i-0abc1234def567890", "amibackup-nightly-i-0abc1234def567890-20261124T030000Z"},
		{"a", "i-12345678", "amibackup-a-i-12345678-20261124T030000Z"},
		{strings.Repeat("p", 32), "i-0abc1234def567890", "amibackup-" + strings.Repeat("p", 32) + "-i-0abc1234def567890-20261124T030000Z"},
	}
	for _, tt := range tests {
		got := Name(tt.policy, tt.instance, slot)
		if got != tt.want {
			t.Errorf("Name = %q, want %q", got, tt.want)
		}
		if got != Name(tt.policy, tt.instance, slot.UTC()) {
			t.Errorf("name depends on the slot's zone")
		}
		if !ValidName(got) {
			t.Errorf("%q is not a valid AMI name", got)
		}
		// ParseName reads back what Name wrote.
		p, ok := ParseName(got)
		if !ok || p.Policy != tt.policy || p.InstanceID != tt.instance || !p.Slot.Equal(slot) {
			t.Errorf("ParseName(%q) = %+v, %v", got, p, ok)
		}
	}
	for _, dep := range []string{"d", "dr-eu", strings.Repeat("D-9", 21) + "x"} { // 1 to 64 characters
		if n := CopyName(dep, "111111111111", "ami-0123456789abcdef0"); !ValidName(n) || !strings.Contains(n, dep) {
			t.Errorf("copy name %q (%d characters) invalid", n, len(n))
		}
	}
}

func TestParseName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
		want Parsed
	}{
		{"amibackup-web-i-0123456789abcdef0-20261124T030000Z", true,
			Parsed{"web", "i-0123456789abcdef0", time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)}},
		{"amibackup-a-b-i-12345678-20260101T000000Z", true, Parsed{"a-b", "i-12345678", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}},
		// The shape of a name, but no valid time: read, without a slot.
		{"amibackup-web-i-12345678-20261399T990000Z", true, Parsed{Policy: "web", InstanceID: "i-12345678"}},
		{CopyName("dr", "111111111111", "ami-0123456789abcdef0"), false, Parsed{}},
		{"amibackup-Web-i-12345678-20261124T030000Z", false, Parsed{}},
		{"amibackup-web-i-12345678-20261124T030000", false, Parsed{}},
		{"x-amibackup-web-i-12345678-20261124T030000Z", false, Parsed{}},
		{"", false, Parsed{}},
	}
	for _, tc := range tests {
		got, ok := ParseName(tc.name)
		if ok != tc.ok || got.Policy != tc.want.Policy || got.InstanceID != tc.want.InstanceID || !got.Slot.Equal(tc.want.Slot) {
			t.Errorf("ParseName(%q) = %+v, %v; want %+v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestValidName(t *testing.T) {
	tests := map[string]bool{
		"ab":                        false,
		"abc":                       true,
		strings.Repeat("a", 128):    true,
		strings.Repeat("a", 129):    false,
		"name with (parens) [x] @'": true,
		"bad#char":                  false,
		"bad:colon":                 false,
	}
	for in, want := range tests {
		if got := ValidName(in); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestDescribesDeployment(t *testing.T) {
	slot := time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
	desc := Description("prod-eu", "nightly", "i-0123456789abcdef0", slot, true)
	for _, tc := range []struct {
		deployment string
		want       bool
	}{{"prod-eu", true}, {"prod", false}, {"prod-e", false}, {"", false}} {
		if got := DescribesDeployment(desc, tc.deployment); got != tc.want {
			t.Errorf("DescribesDeployment(%q, %q) = %v", desc, tc.deployment, got)
		}
	}
	if len(desc) > 255 {
		t.Errorf("description is %d characters; EC2 allows 255", len(desc))
	}
}

func TestDeprecationTime(t *testing.T) {
	slot := time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		created time.Time
		age     time.Duration
		want    time.Time
	}{
		{slot, 24 * time.Hour, slot.Add(24 * time.Hour)},
		{slot.Add(30 * time.Second), time.Hour, slot.Add(time.Hour + time.Minute)},
	} {
		if got := DeprecationTime(tc.created, tc.age); !got.Equal(tc.want) {
			t.Errorf("DeprecationTime(%v, %v) = %v, want %v", tc.created, tc.age, got, tc.want)
		}
	}
}

// pages is a DescribeImages that ignores filters (as a careless emulator
// or a changed API might) and answers fixed pages, then fails if asked.
type pages struct {
	pages [][]types.Image
	fail  error
	calls []*ec2.DescribeImagesInput
}

func (p *pages) DescribeImages(_ context.Context, in *ec2.DescribeImagesInput, _ ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error) {
	i := len(p.calls)
	p.calls = append(p.calls, in)
	if i >= len(p.pages) {
		return nil, p.fail
	}
	out := &ec2.DescribeImagesOutput{Images: p.pages[i]}
	if i+1 < len(p.pages) || p.fail != nil {
		out.NextToken = aws.String("next")
	}
	return out, nil
}

func img(id string, kv ...string) types.Image {
	im := types.Image{ImageId: aws.String(id), State: types.ImageStateAvailable}
	for i := 0; i+1 < len(kv); i += 2 {
		im.Tags = append(im.Tags, types.Tag{Key: aws.String(kv[i]), Value: aws.String(kv[i+1])})
	}
	return im
}

// TestManaged: the listing filters in EC2 and checks the tags again here,
// across pages; an error ends it after the images before it.
func TestManaged(t *testing.T) {
	slot := time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
	ours := func(id, policy string) types.Image {
		return img(id, tags.ManagedBy, "prod", tags.Policy, policy, tags.Time, tags.FormatTime(slot))
	}
	api := &pages{pages: [][]types.Image{
		{ours("ami-1", "nightly"), img("ami-2", tags.ManagedBy, "other", tags.Policy, "nightly"), ours("ami-3", "weekly")},
		{img("ami-4"), ours("ami-5", "nightly")},
	}}
	var got []string
	for im, err := range Managed(context.Background(), api, Query{Deployment: "prod", Policy: "nightly", Slot: slot}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, aws.ToString(im.ImageId))
	}
	if !slices.Equal(got, []string{"ami-1", "ami-5"}) || len(api.calls) != 2 {
		t.Fatalf("yielded %v in %d calls, want [ami-1 ami-5] in 2", got, len(api.calls))
	}
	in := api.calls[0]
	var filters []string
	for _, f := range in.Filters {
		filters = append(filters, aws.ToString(f.Name)+"="+strings.Join(f.Values, ","))
	}
	want := []string{"tag:" + tags.ManagedBy + "=prod", "tag:" + tags.Policy + "=nightly", "tag:" + tags.Time + "=" + tags.FormatTime(slot)}
	if !slices.Equal(filters, want) || !slices.Equal(in.Owners, []string{"self"}) || aws.ToInt32(in.MaxResults) != PageSize {
		t.Fatalf("request filters %v owners %v max %d", filters, in.Owners, aws.ToInt32(in.MaxResults))
	}

	boom := errors.New("boom")
	api = &pages{pages: [][]types.Image{{ours("ami-1", "nightly")}}, fail: boom}
	got, errs := nil, 0
	for im, err := range Managed(context.Background(), api, Query{Deployment: "prod", States: []string{"available"}}) {
		if err != nil {
			errs++
			if !errors.Is(err, boom) {
				t.Fatalf("error %v", err)
			}
			continue
		}
		got = append(got, aws.ToString(im.ImageId))
	}
	if !slices.Equal(got, []string{"ami-1"}) || errs != 1 || len(api.calls) != 2 {
		t.Fatalf("yielded %v and %d errors in %d calls", got, errs, len(api.calls))
	}

	// Stopping early asks for no further page.
	api = &pages{pages: [][]types.Image{{ours("ami-1", "nightly")}, {ours("ami-2", "nightly")}}}
	for range Managed(context.Background(), api, Query{Deployment: "prod"}) {
		break
	}
	if len(api.calls) != 1 {
		t.Fatalf("%d calls after stopping at the first image", len(api.calls))
	}
}

func TestFindByNameAndSnapshots(t *testing.T) {
	im := img("ami-1")
	im.BlockDeviceMappings = []types.BlockDeviceMapping{{Ebs: &types.EbsBlockDevice{SnapshotId: aws.String("snap-1")}},
		{VirtualName: aws.String("ephemeral0")}, {Ebs: &types.EbsBlockDevice{SnapshotId: aws.String("snap-2")}}}
	api := &pages{pages: [][]types.Image{{im}, {}}}
	got, found, err := FindByName(context.Background(), api, "n")
	if err != nil || !found || aws.ToString(got.ImageId) != "ami-1" {
		t.Fatalf("FindByName = %v, %v, %v", got.ImageId, found, err)
	}
	if f := api.calls[0].Filters; len(f) != 1 || aws.ToString(f[0].Name) != "name" || f[0].Values[0] != "n" || api.calls[0].Owners[0] != "self" {
		t.Fatalf("request %+v", api.calls[0])
	}
	if _, found, err := FindByName(context.Background(), api, "n"); found || err != nil {
		t.Fatalf("no image: found %v, err %v", found, err)
	}
	if s := SnapshotIDs(im); !slices.Equal(s, []string{"snap-1", "snap-2"}) {
		t.Fatalf("SnapshotIDs = %v", s)
	}
}
