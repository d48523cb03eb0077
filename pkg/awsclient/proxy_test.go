package awsclient_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
	"github.com/amibackup/amibackup/pkg/localrun"
)

// TestProxyEnvironmentHonoured: the production client reaches EC2 through
// HTTPS_PROXY (or https_proxy) and bypasses it for hosts in NO_PROXY. The
// endpoint, https://ec2.example.com, does not resolve: only the CONNECT
// proxy (localrun.Proxy) can reach it, and it tunnels to a TLS ec2sim whose
// certificate only AWS_CA_BUNDLE trusts. net/http reads the proxy variables
// once per process, so each case runs the call in a child test process.
func TestProxyEnvironmentHonoured(t *testing.T) {
	if os.Getenv("AMIBACKUP_PROXY_CHILD") != "" {
		proxyChild(t)
		return
	}
	e := simtest.StartTLS(t, ec2sim.Options{})
	e.Sim.SeedFleet("", "", 2, nil)
	proxy, err := localrun.StartProxy(localrun.EndpointHost, strings.TrimPrefix(e.URL, "https://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	tests := []struct {
		name    string
		env     []string
		ok      bool
		tunnels bool
	}{
		{"HTTPS_PROXY is the only route", []string{"HTTPS_PROXY=" + proxy.URL, "NO_PROXY=localhost,127.0.0.1"}, true, true},
		{"lower-case https_proxy", []string{"https_proxy=" + proxy.URL}, true, true},
		{"NO_PROXY bypasses the proxy", []string{"HTTPS_PROXY=" + proxy.URL, "NO_PROXY=localhost,127.0.0.1,.example.com"}, false, false},
		{"no proxy: unreachable", nil, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := proxy.Tunnels()
			cmd := exec.Command(os.Args[0], "-test.run=^TestProxyEnvironmentHonoured$", "-test.count=1")
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "AMIBACKUP_PROXY_CHILD=1",
				"AWS_ENDPOINT_URL_EC2=https://" + localrun.EndpointHost, "AWS_CA_BUNDLE=" + e.CABundle,
				"AWS_ACCESS_KEY_ID=" + ec2sim.DefaultAccount, "AWS_SECRET_ACCESS_KEY=s", "AWS_REGION=" + ec2sim.DefaultRegion,
				"AWS_EC2_METADATA_DISABLED=true", "AWS_MAX_ATTEMPTS=1"}, tt.env...)
			out, err := cmd.CombinedOutput()
			if (err == nil) != tt.ok {
				t.Errorf("call succeeded %v, want %v:\n%s", err == nil, tt.ok, out)
			}
			if tunnelled := proxy.Tunnels() > before; tunnelled != tt.tunnels {
				t.Errorf("proxy used %v, want %v:\n%s", tunnelled, tt.tunnels, out)
			}
		})
	}
}

func proxyChild(t *testing.T) {
	cfg, _, err := awsclient.LoadConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := describe(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
}
