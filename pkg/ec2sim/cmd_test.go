package ec2sim_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
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

// runCommand builds cmd/ec2sim, runs it with args and returns the URL it
// printed; it fails the test if the process does not exit within 10 s of
// SIGTERM at the end.
func runCommand(t *testing.T, args ...string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the ec2sim binary; skipped in -short mode")
	}
	bin := filepath.Join(t.TempDir(), "ec2sim")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/ec2sim").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/ec2sim: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Error("ec2sim did not exit within 10s of SIGTERM")
		}
	})
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	select {
	case l := <-lines:
		_, rest, ok := strings.Cut(l, "listening on ")
		if !ok {
			t.Fatalf("first line %q does not name the address", l)
		}
		url, _, _ := strings.Cut(rest, " ")
		return url
	case <-time.After(30 * time.Second):
		t.Fatal("ec2sim printed nothing within 30s")
	}
	return ""
}

// TestStandaloneCommand builds cmd/ec2sim, runs it on a free port and
// queries it as a user would: through the SDK and the control API.
func TestStandaloneCommand(t *testing.T) {
	url := runCommand(t, "-listen", "127.0.0.1:0", "-instances", "4", "-tag", "Backup=nightly",
		"-accounts", "111111111111,222222222222", "-regions", "eu-west-1", "-image-delay", "0s")
	ctx := context.Background()
	c := client(t, url, "222222222222", "eu-west-1")
	out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(5)})
	if err != nil {
		t.Fatalf("DescribeInstances against %s: %v", url, err)
	}
	if len(out.Reservations) != 4 || tagsOf(out.Reservations[0].Instances[0].Tags)["Backup"] != "nightly" {
		t.Fatalf("seeded fleet: %d reservations, tags %v", len(out.Reservations), out.Reservations[0].Instances[0].Tags)
	}
	img, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: out.Reservations[0].Instances[0].InstanceId, Name: aws.String("standalone")})
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(img.ImageId)}})
	if err != nil || imgs.Images[0].State != "available" {
		t.Fatalf("image with -image-delay 0s: %v %+v", err, imgs)
	}
	resp, err := http.Get(url + "/_sim/calls")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var calls ec2sim.CallLog
	if err := json.NewDecoder(resp.Body).Decode(&calls); err != nil {
		t.Fatal(err)
	}
	if calls.ByAccount["222222222222"]["DescribeInstances"] != 1 || calls.ByAccount["222222222222"]["CreateImage"] != 1 {
		t.Fatalf("call log %+v", calls)
	}
}
