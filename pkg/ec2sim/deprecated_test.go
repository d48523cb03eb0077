package ec2sim_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/ec2sim"
)

// TestDescribeImagesIncludeDeprecated: an image past its deprecation time
// is hidden from the accounts it is shared with unless they pass
// IncludeDeprecated or name its ID; its owner always sees it.
func TestDescribeImagesIncludeDeprecated(t *testing.T) {
	const owner, user = "111111111111", "222222222222"
	sim, srvURL := start(t, ec2sim.Options{})
	ctx := context.Background()
	oc := client(t, srvURL, owner, ec2sim.DefaultRegion)
	old, _ := sim.AddImage(ec2sim.ImageSpec{Account: owner, Name: "old"})
	current, _ := sim.AddImage(ec2sim.ImageSpec{Account: owner, Name: "current"})
	for im, after := range map[string]time.Duration{old: time.Hour, current: 48 * time.Hour} {
		if _, err := oc.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{ImageId: aws.String(im),
			LaunchPermission: &types.LaunchPermissionModifications{Add: []types.LaunchPermission{{UserId: aws.String(user)}}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := oc.EnableImageDeprecation(ctx, &ec2.EnableImageDeprecationInput{ImageId: aws.String(im), DeprecateAt: aws.Time(sim.Now().Add(after))}); err != nil {
			t.Fatal(err)
		}
	}
	sim.Advance(2 * time.Hour) // old is now deprecated, current is not yet
	for _, tc := range []struct {
		name    string
		account string
		in      ec2.DescribeImagesInput
		want    []string
	}{
		{"owner sees deprecated images without asking", owner, ec2.DescribeImagesInput{Owners: []string{"self"}}, []string{old, current}},
		{"shared account does not by default", user, ec2.DescribeImagesInput{Owners: []string{owner}}, []string{current}},
		{"shared account with ExecutableUsers=self", user, ec2.DescribeImagesInput{ExecutableUsers: []string{"self"}}, []string{current}},
		{"shared account with IncludeDeprecated", user, ec2.DescribeImagesInput{Owners: []string{owner}, IncludeDeprecated: aws.Bool(true)}, []string{old, current}},
		{"shared account naming the ID", user, ec2.DescribeImagesInput{ImageIds: []string{old}}, []string{old}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := client(t, srvURL, tc.account, ec2sim.DefaultRegion).DescribeImages(ctx, &tc.in)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, im := range out.Images {
				got = append(got, aws.ToString(im.ImageId))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("images %v, want %v", got, tc.want)
			}
		})
	}
}
