package ec2sim_test

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/amibackup/amibackup/pkg/ec2sim"
)

// TestStandaloneRebootModel: -reboot-model and -group-tag reach the
// emulator: a CreateImage stops the instance, and the tag group's maximum
// shows in GET /_sim/calls.
func TestStandaloneRebootModel(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the ec2sim binary; skipped in -short mode")
	}
	bin := filepath.Join(t.TempDir(), "ec2sim")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/ec2sim").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/ec2sim: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-listen", "127.0.0.1:0", "-instances", "2", "-tag", "Tier=web",
		"-reboot-model", "-group-tag", "Tier", "-throttle=false")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	lines := make(chan string, 8)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var url string
	select {
	case l := <-lines:
		_, rest, _ := strings.Cut(l, "listening on ")
		url, _, _ = strings.Cut(rest, " ")
	case <-time.After(30 * time.Second):
		t.Fatal("ec2sim printed nothing within 30s")
	}
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
