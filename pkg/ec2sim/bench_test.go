package ec2sim_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
)

// BenchmarkSimOverhead is the emulator's own cost per call through the real
// SDK client over loopback HTTP, so other benchmarks can subtract it.
func BenchmarkSimOverhead(b *testing.B) {
	sim := ec2sim.New(ec2sim.Options{})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	ids := sim.SeedFleet("", "", 100, map[string]string{"Backup": "nightly"})
	c := client(b, srv.URL, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	ctx := context.Background()
	b.Run("DescribeInstances-100", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(1000)}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("CreateImage", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			if _, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(ids[i%len(ids)]), Name: aws.String(fmt.Sprintf("bench-%d", i))}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestLargeResponsesNoDroppedConnections is the regression test for
// "deserialization failed ... use of closed network connection" on
// DescribeInstances pages of 100 instances (~80 KB). Retries are off, so a
// single dropped connection fails the test instead of being hidden by the
// retryer, and the call log must count exactly one request per operation.
// Without simtest.HTTPClient it fails within a few hundred calls.
func TestLargeResponsesNoDroppedConnections(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 300
	}
	sim := ec2sim.New(ec2sim.Options{})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	sim.SeedFleet("", "", 100, map[string]string{"Backup": "nightly"})
	c := ec2.New(ec2.Options{Region: ec2sim.DefaultRegion, BaseEndpoint: aws.String(srv.URL), Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider(ec2sim.DefaultAccount, "secret", ""), HTTPClient: simtest.HTTPClient()})
	ctx := context.Background()
	errs := 0
	for i := range n {
		out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(1000)})
		if err != nil {
			errs++
			t.Errorf("call %d: %v", i, err)
			if errs > 5 {
				t.FailNow()
			}
			continue
		}
		if len(out.Reservations) != 100 {
			t.Fatalf("call %d: %d reservations, want 100", i, len(out.Reservations))
		}
	}
	calls := sim.Calls()
	if calls.Total != n || calls.Count("DescribeInstances") != n {
		t.Fatalf("call log: total %d, DescribeInstances %d; want %d each", calls.Total, calls.Count("DescribeInstances"), n)
	}
}
