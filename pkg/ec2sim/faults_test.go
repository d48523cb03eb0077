package ec2sim_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/ec2sim"
)

// TestFaultsMatchListParameters: a fault for one instance or image fires
// when the resource is named in a list (InstanceId.N, ImageId.N,
// ResourceId.N), and only then.
func TestFaultsMatchListParameters(t *testing.T) {
	ctx := context.Background()
	tag := []types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}
	for _, tc := range []struct {
		name  string
		fault func(in, other, img string) ec2sim.Fault
		call  func(c *ec2.Client, in, other, img string, hit bool) error
	}{
		{"DescribeInstances InstanceId.N",
			func(in, _, _ string) ec2sim.Fault {
				return ec2sim.Fault{Action: "DescribeInstances", InstanceID: in, Code: "Unavailable"}
			},
			func(c *ec2.Client, in, other, _ string, hit bool) error {
				ids := []string{other}
				if hit {
					ids = append(ids, in)
				}
				_, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids})
				return err
			}},
		{"CreateTags ResourceId.N for an instance",
			func(in, _, _ string) ec2sim.Fault {
				return ec2sim.Fault{Action: "CreateTags", InstanceID: in, Code: "Unavailable"}
			},
			func(c *ec2.Client, in, other, _ string, hit bool) error {
				ids := []string{other}
				if hit {
					ids = []string{other, in}
				}
				_, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: ids, Tags: tag})
				return err
			}},
		{"DeleteTags ResourceId.N for an image",
			func(_, _, img string) ec2sim.Fault {
				return ec2sim.Fault{Action: "DeleteTags", ImageID: img, Code: "Unavailable"}
			},
			func(c *ec2.Client, _, other, img string, hit bool) error {
				ids := []string{other}
				if hit {
					ids = []string{other, img}
				}
				_, err := c.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: ids, Tags: []types.Tag{{Key: aws.String("k")}}})
				return err
			}},
		{"DescribeImages ImageId.N",
			func(_, _, img string) ec2sim.Fault {
				return ec2sim.Fault{Action: "DescribeImages", ImageID: img, Code: "Unavailable"}
			},
			func(c *ec2.Client, _, _, img string, hit bool) error {
				in := &ec2.DescribeImagesInput{Owners: []string{"self"}}
				if hit {
					in.ImageIds = []string{img}
				}
				_, err := c.DescribeImages(ctx, in)
				return err
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sim, srvURL := start(t, ec2sim.Options{})
			c := noRetryClient(srvURL, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
			in, other := sim.AddInstance(ec2sim.InstanceSpec{}), sim.AddInstance(ec2sim.InstanceSpec{})
			img, _ := sim.AddImage(ec2sim.ImageSpec{Name: "faulty"})
			sim.Inject(tc.fault(in, other, img))
			if err := tc.call(c, in, other, img, false); err != nil {
				t.Fatalf("call not naming the resource: %v", err)
			}
			if err := tc.call(c, in, other, img, true); code(err) != "Unavailable" {
				t.Fatalf("call naming the resource in a list: %v, want the injected Unavailable", err)
			}
		})
	}
}

// TestDelayFault: a Delay fault holds only the matching action, then serves
// it normally (or fails it with Code); a client that gives up is released.
func TestDelayFault(t *testing.T) {
	const delay = 300 * time.Millisecond
	sim, u := start(t, ec2sim.Options{})
	c := client(t, u, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	sim.Inject(ec2sim.Fault{Action: "DescribeImages", Delay: delay, Times: 1})
	sim.Inject(ec2sim.Fault{Action: "DescribeSnapshots", Delay: delay, Code: "UnauthorizedOperation", Times: 1})
	ctx := context.Background()

	t0 := time.Now()
	if _, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d >= delay {
		t.Fatalf("DescribeInstances took %v: the delay must apply to DescribeImages only", d)
	}
	t0 = time.Now()
	if _, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}}); err != nil {
		t.Fatalf("delayed DescribeImages must succeed: %v", err)
	}
	if d := time.Since(t0); d < delay {
		t.Fatalf("DescribeImages took %v, want at least %v", d, delay)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	sim.Inject(ec2sim.Fault{Action: "DescribeImages", Delay: time.Hour, Times: 1})
	t0 = time.Now()
	if _, err := c.DescribeImages(cctx, &ec2.DescribeImagesInput{Owners: []string{"self"}}); err == nil {
		t.Fatal("a call held for an hour must fail at the client's deadline")
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("client deadline not honoured: %v", d)
	}
	_, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, MaxResults: aws.Int32(5)})
	if awsclient.ErrorCode(err) != "UnauthorizedOperation" {
		t.Fatalf("delayed fault with a code: got %v, want UnauthorizedOperation", err)
	}
}

// TestAfterFault: an After fault lets the call take effect, then answers the
// error, so the client's retry meets its own result; without After the
// failed call changes nothing.
func TestAfterFault(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		after      bool
		wantImages int
	}{{false, 0}, {true, 1}} {
		sim, u := start(t, ec2sim.Options{})
		c := noRetryClient(u, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
		in := sim.AddInstance(ec2sim.InstanceSpec{})
		sim.Inject(ec2sim.Fault{Action: "CreateImage", InstanceID: in, Code: "InternalError", After: tc.after, Times: 1})
		create := func() error {
			_, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(in), Name: aws.String("lost-answer")})
			return err
		}
		if err := create(); code(err) != "InternalError" {
			t.Fatalf("after=%v: first call %v, want the injected InternalError", tc.after, err)
		}
		if n := len(sim.Images("", "")); n != tc.wantImages {
			t.Fatalf("after=%v: %d images after the failed call, want %d", tc.after, n, tc.wantImages)
		}
		wantRetry := ""
		if tc.after {
			wantRetry = "InvalidAMIName.Duplicate"
		}
		if err := create(); code(err) != wantRetry {
			t.Fatalf("after=%v: retry %v, want %q", tc.after, err, wantRetry)
		}
		if c := sim.Calls(); c.Faults["CreateImage"] != 1 || c.Count("CreateImage") != 2 {
			t.Fatalf("after=%v: calls %+v", tc.after, c)
		}
	}
}
