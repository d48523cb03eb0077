package ec2sim_test

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/amibackup/amibackup/pkg/ec2sim"
)

// TestStandaloneRebootModel: -reboot-model and -group-tag reach the
// emulator: a CreateImage stops the instance, and the tag group's maximum
// shows in GET /_sim/calls.
func TestStandaloneRebootModel(t *testing.T) {
	url := runCommand(t, "-listen", "127.0.0.1:0", "-instances", "2", "-tag", "Tier=web",
		"-reboot-model", "-group-tag", "Tier", "-throttle=false")
	ctx := context.Background()
	c := client(t, url, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil || len(out.Reservations) != 2 {
		t.Fatalf("DescribeInstances: %v, %v", out, err)
	}
	id := out.Reservations[0].Instances[0].InstanceId
	if _, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: id, Name: aws.String("standalone")}); err != nil {
		t.Fatal(err)
	}
	after, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{aws.ToString(id)}})
	if err != nil || after.Reservations[0].Instances[0].State.Name != "stopping" {
		t.Fatalf("after CreateImage: %+v, %v", after, err)
	}
	var calls ec2sim.CallLog
	getJSON(t, url+"/_sim/calls", &calls)
	if got := calls.MaxUnavailable[ec2sim.GroupKey(ec2sim.DefaultAccount, ec2sim.DefaultRegion, ec2sim.GroupTag, "Tier=web")]; got != 1 {
		t.Fatalf("MaxUnavailable %v", calls.MaxUnavailable)
	}
}
