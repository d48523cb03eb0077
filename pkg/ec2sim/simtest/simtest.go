// Package simtest starts an ec2sim emulator for tests and benchmarks and
// returns real SDK clients pointed at it through the standard BaseEndpoint.
package simtest

import (
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/ec2sim"
)

// Env is a running emulator.
type Env struct {
	Sim *ec2sim.Sim
	URL string
}

// Start serves a new emulator until the test ends.
func Start(tb testing.TB, opts ec2sim.Options) *Env {
	tb.Helper()
	sim := ec2sim.New(opts)
	srv := httptest.NewServer(sim)
	tb.Cleanup(srv.Close)
	return &Env{Sim: sim, URL: srv.URL}
}

// Client returns a real EC2 client for the account and Region with
// amibackup's production retryer and the HTTPClient workaround for the
// SDK's closed-connection race.
func (e *Env) Client(account, region string) *ec2.Client {
	if account == "" {
		account = ec2sim.DefaultAccount
	}
	if region == "" {
		region = ec2sim.DefaultRegion
	}
	return ec2.New(ec2.Options{
		Region:       region,
		BaseEndpoint: aws.String(e.URL),
		Credentials:  credentials.NewStaticCredentialsProvider(account, "secret", ""),
		Retryer:      awsclient.NewRetryer(),
		HTTPClient:   HTTPClient(),
	})
}
