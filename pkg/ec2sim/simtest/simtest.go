// Package simtest starts an ec2sim emulator for tests and benchmarks and
// returns real SDK clients pointed at it through the standard BaseEndpoint.
package simtest

import (
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
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
	// CABundle is, for StartTLS, a PEM file of the emulator's certificate.
	CABundle string
}

// Start serves a new emulator until the test ends.
func Start(tb testing.TB, opts ec2sim.Options) *Env {
	tb.Helper()
	sim := ec2sim.New(opts)
	srv := httptest.NewServer(sim)
	tb.Cleanup(srv.Close)
	return &Env{Sim: sim, URL: srv.URL}
}

// StartTLS serves a new emulator over HTTPS until the test ends. Its
// certificate (httptest's self-signed one, valid for 127.0.0.1, example.com
// and *.example.com) is in CABundle, a PEM file for AWS_CA_BUNDLE: nothing
// else makes a client trust it.
func StartTLS(tb testing.TB, opts ec2sim.Options) *Env {
	tb.Helper()
	sim := ec2sim.New(opts)
	srv := httptest.NewTLSServer(sim)
	tb.Cleanup(srv.Close)
	bundle := filepath.Join(tb.TempDir(), "ca-bundle.pem")
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		tb.Fatal(err)
	}
	return &Env{Sim: sim, URL: srv.URL, CABundle: bundle}
}

// Setenv gives the test the standard SDK environment of a function talking
// to this emulator as account in region (empty: the defaults): endpoint,
// credentials and Region, AWS_CA_BUNDLE for a TLS emulator, no shared
// config files, no IMDS, and none of the caller's retry or proxy settings.
// EC2, KMS, Auto Scaling and ELBv2 all reach the emulator.
// Code under test then loads its configuration the production way.
func (e *Env) Setenv(tb testing.TB, account, region string) {
	tb.Helper()
	if account == "" {
		account = ec2sim.DefaultAccount
	}
	if region == "" {
		region = ec2sim.DefaultRegion
	}
	none := filepath.Join(tb.TempDir(), "absent")
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL_EC2": e.URL, "AWS_ENDPOINT_URL_KMS": e.URL,
		"AWS_ENDPOINT_URL_AUTO_SCALING": e.URL, "AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2": e.URL, "AWS_ENDPOINT_URL": "",
		"AWS_ACCESS_KEY_ID": account, "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "",
		"AWS_REGION": region, "AWS_DEFAULT_REGION": "", "AWS_PROFILE": "", "AWS_DEFAULTS_MODE": "",
		"AWS_CONFIG_FILE": none, "AWS_SHARED_CREDENTIALS_FILE": none, "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_CA_BUNDLE": e.CABundle, "AWS_MAX_ATTEMPTS": "", "AWS_RETRY_MODE": "",
	} {
		tb.Setenv(k, v)
	}
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
