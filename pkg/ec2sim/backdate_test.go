package ec2sim_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
)

// TestBackdateLaunch: the reported launchTime moves back, the state does
// not; a seeded instance (not launched) is refused.
func TestBackdateLaunch(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{})
	c := env.Client("", "")
	ctx := context.Background()
	img, _ := env.Sim.AddImage(ec2sim.ImageSpec{Name: "base"})
	out, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(img), InstanceType: types.InstanceTypeT3Micro, MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	before := aws.ToTime(out.Instances[0].LaunchTime)
	if err := env.Sim.BackdateLaunch("", "", id, time.Hour); err != nil {
		t.Fatal(err)
	}
	d, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	in := d.Reservations[0].Instances[0]
	if got := before.Sub(aws.ToTime(in.LaunchTime)); got != time.Hour {
		t.Errorf("launchTime moved back %s, want 1h", got)
	}
	if in.State.Name != types.InstanceStateNamePending {
		t.Errorf("state %s, want pending (unchanged)", in.State.Name)
	}
	seeded := env.Sim.AddInstance(ec2sim.InstanceSpec{})
	if err := env.Sim.BackdateLaunch("", "", seeded, time.Hour); err == nil {
		t.Error("a seeded instance was backdated")
	}
}
