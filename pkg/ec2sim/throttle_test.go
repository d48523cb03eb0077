package ec2sim_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
)

// noRetryClient sees every RequestLimitExceeded instead of retrying it.
func noRetryClient(url, account, region string) *ec2.Client {
	return ec2.New(ec2.Options{Region: region, BaseEndpoint: aws.String(url), Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider(account, "secret", ""), HTTPClient: simtest.HTTPClient()})
}

// TestThrottleBucketPerAction: each action has its own bucket per account
// and Region, sized by its class. Exhausting one leaves the same class's
// other actions, and other Regions and accounts, untouched.
func TestThrottleBucketPerAction(t *testing.T) {
	ctx := context.Background()
	tagIt := func(img string) func(*ec2.Client) error {
		return func(c *ec2.Client) error {
			_, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{img}, Tags: []types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}})
			return err
		}
	}
	untag := func(img string) func(*ec2.Client) error {
		return func(c *ec2.Client) error {
			_, err := c.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{img}, Tags: []types.Tag{{Key: aws.String("k")}}})
			return err
		}
	}
	describeImages := func(string) func(*ec2.Client) error {
		return func(c *ec2.Client) error {
			_, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
			return err
		}
	}
	describeSnapshots := func(string) func(*ec2.Client) error {
		return func(c *ec2.Client) error {
			_, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, MaxResults: aws.Int32(5)})
			return err
		}
	}
	byIDs := func(string) func(*ec2.Client) error {
		return func(c *ec2.Client) error {
			_, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"i-0123456789abcdef0"}})
			if code(err) == "InvalidInstanceID.NotFound" {
				return nil // accepted by the bucket, then failed: that is what counts here
			}
			return err
		}
	}
	paged := func(string) func(*ec2.Client) error {
		return func(c *ec2.Client) error {
			_, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(5)})
			return err
		}
	}
	for _, tc := range []struct {
		name string
		size int
		// drain is throttled after size calls; other still succeeds.
		drain, other func(img string) func(*ec2.Client) error
	}{
		{"DeleteTags is mutating (50), not CreateTags' bucket", 50, untag, tagIt},
		{"CreateTags has 100, apart from DeleteTags", 100, tagIt, untag},
		{"DescribeImages apart from DescribeSnapshots", 100, describeImages, describeSnapshots},
		{"DescribeInstances by IDs only is unfiltered (50), apart from paginated calls", 50, byIDs, paged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A near-frozen clock: no refill during the test.
			sim, srvURL := start(t, ec2sim.Options{Throttle: true, TimeScale: 1e-9})
			img, _ := sim.AddImage(ec2sim.ImageSpec{Name: "throttle"})
			c := noRetryClient(srvURL, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
			for i := range tc.size {
				if err := tc.drain(img)(c); err != nil {
					t.Fatalf("call %d of %d: %v", i+1, tc.size, err)
				}
			}
			if err := tc.drain(img)(c); code(err) != "RequestLimitExceeded" {
				t.Fatalf("call %d: %v, want RequestLimitExceeded", tc.size+1, err)
			}
			if err := tc.other(img)(c); err != nil {
				t.Fatalf("another action in the same account and Region: %v", err)
			}
			for _, o := range []struct{ account, region string }{{"222222222222", ec2sim.DefaultRegion}, {ec2sim.DefaultAccount, "eu-west-1"}} {
				if err := tc.drain("ami-0123456789abcdef0")(noRetryClient(srvURL, o.account, o.region)); err != nil && code(err) != "InvalidAMIID.NotFound" {
					t.Fatalf("same action in account %s, Region %s: %v", o.account, o.region, err)
				}
			}
			sim.Advance(10 * time.Second)
			if err := tc.drain(img)(c); err != nil {
				t.Fatalf("after refill: %v", err)
			}
		})
	}
}
