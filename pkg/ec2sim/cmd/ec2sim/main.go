// Command ec2sim serves the EC2 emulator on a local port:
//
//	go run ./pkg/ec2sim/cmd/ec2sim -listen 127.0.0.1:4566 -instances 20 -tag Backup=nightly
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/amibackup/amibackup/pkg/ec2sim"
)

type tagFlags map[string]string

func (t tagFlags) String() string { return fmt.Sprint(map[string]string(t)) }
func (t tagFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("-tag wants KEY=VALUE, got %q", v)
	}
	t[k] = val
	return nil
}

type tagKeys []string

func (t *tagKeys) String() string { return strings.Join(*t, ",") }
func (t *tagKeys) Set(v string) error {
	if v == "" {
		return fmt.Errorf("-group-tag wants a tag KEY")
	}
	*t = append(*t, v)
	return nil
}

func main() {
	tags := tagFlags{}
	listen := flag.String("listen", "127.0.0.1:4566", "address to serve on (port 0 picks a free port)")
	instances := flag.Int("instances", 0, "running instances to seed (1-3 EBS volumes each) in every account and Region")
	flag.Var(tags, "tag", "tag KEY=VALUE on the seeded instances (repeatable)")
	accounts := flag.String("accounts", ec2sim.DefaultAccount, "comma-separated 12-digit account IDs to seed")
	regions := flag.String("regions", ec2sim.DefaultRegion, "comma-separated Regions to seed")
	throttle := flag.Bool("throttle", true, "enforce EC2's request token buckets (RequestLimitExceeded)")
	scale := flag.Float64("time-scale", 1, "simulated seconds per real second (buckets, image delays, clock)")
	imageDelay := flag.Duration("image-delay", 30*time.Second, "simulated time an image stays pending")
	copyDelay := flag.Duration("copy-delay", 60*time.Second, "simulated time a copied image stays pending")
	faultRate := flag.Float64("fault-rate", 0, "share of requests answered InternalError/Unavailable (0-1)")
	latency := flag.Duration("latency", 0, "real latency added to every request")
	seed := flag.Int64("seed", 1, "random seed for faults")
	rebootModel := flag.Bool("reboot-model", false, "CreateImage without NoReboot stops and restarts the instance over simulated time")
	var groupTags tagKeys
	flag.Var(&groupTags, "group-tag", "tag KEY whose values form availability groups (repeatable)")
	flag.Parse()
	if *faultRate < 0 || *faultRate > 1 || *scale <= 0 || *instances < 0 {
		fmt.Fprintln(os.Stderr, "ec2sim: -fault-rate must be 0-1, -time-scale > 0, -instances >= 0")
		os.Exit(2)
	}
	sim := ec2sim.New(ec2sim.Options{Throttle: *throttle, TimeScale: *scale, ImageDelay: *imageDelay, CopyDelay: *copyDelay,
		FaultRate: *faultRate, Latency: *latency, Seed: *seed, RebootModel: *rebootModel, GroupTags: groupTags})
	for _, a := range strings.Split(*accounts, ",") {
		for _, r := range strings.Split(*regions, ",") {
			sim.SeedFleet(a, r, *instances, tags)
		}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ec2sim: %v\n", err)
		os.Exit(1)
	}
	url := "http://" + ln.Addr().String()
	fmt.Printf("ec2sim listening on %s (accounts %s, regions %s, %d instances each)\n", url, *accounts, *regions, *instances)
	fmt.Printf("export AWS_ENDPOINT_URL_EC2=%s AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=sim AWS_REGION=%s\n",
		url, strings.Split(*accounts, ",")[0], strings.Split(*regions, ",")[0])
	fmt.Printf("export AWS_ENDPOINT_URL_AUTO_SCALING=%s AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2=%s\n", url, url)
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(os.Stderr, "ec2sim: %v\n", err)
		os.Exit(1)
	}
}
