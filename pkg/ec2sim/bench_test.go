package ec2sim_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/amibackup/amibackup/pkg/ec2sim"
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
