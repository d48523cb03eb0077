package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/images"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/trigger"
)

// EC2 is what the verifier needs of *ec2.Client.
type EC2 interface {
	images.DescribeImagesAPI
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	DescribeInstanceStatus(context.Context, *ec2.DescribeInstanceStatusInput, ...func(*ec2.Options)) (*ec2.DescribeInstanceStatusOutput, error)
	RunInstances(context.Context, *ec2.RunInstancesInput, ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error)
	TerminateInstances(context.Context, *ec2.TerminateInstancesInput, ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error)
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
	DeleteTags(context.Context, *ec2.DeleteTagsInput, ...func(*ec2.Options)) (*ec2.DeleteTagsOutput, error)
}

// Network is where verification instances boot when a policy names no
// subnet of its own: the stack's isolated VPC (EnvSubnets, EnvSecurityGroup).
type Network struct {
	// Subnets, one per Availability Zone, tried in order.
	Subnets       []string
	SecurityGroup string
}

// NetworkFromEnv reads EnvSubnets and EnvSecurityGroup through getenv
// (os.Getenv). Both empty is valid (then only policies with their own
// subnetId can be verified); a malformed value is an error naming the
// variable.
func NetworkFromEnv(getenv func(string) string) (Network, error) {
	var n Network
	for i, s := range strings.Split(getenv(EnvSubnets), ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !config.SubnetIDRE.MatchString(s) {
			return Network{}, fmt.Errorf("%s: item %d %q is not a subnet ID (subnet- and 8 or 17 hex digits)", EnvSubnets, i, s)
		}
		n.Subnets = append(n.Subnets, s)
	}
	n.SecurityGroup = strings.TrimSpace(getenv(EnvSecurityGroup))
	if n.SecurityGroup != "" && !config.SecurityGroupIDRE.MatchString(n.SecurityGroup) {
		return Network{}, fmt.Errorf("%s: %q is not a security group ID (sg- and 8 or 17 hex digits)", EnvSecurityGroup, n.SecurityGroup)
	}
	if (len(n.Subnets) == 0) != (n.SecurityGroup == "") {
		return Network{}, fmt.Errorf("%s and %s go together: the stack sets both (the isolated VPC's subnets and its security group)", EnvSubnets, EnvSecurityGroup)
	}
	return n, nil
}

// Require checks at cold start that every policy that verifies can be
// placed: its own subnetId, or the stack's network.
func (n Network) Require(cfg *config.Config) error {
	for _, name := range cfg.PolicyNames() {
		pol, _ := cfg.Policy(name)
		if pol.Verify != nil && pol.Verify.Isolated() && len(n.Subnets) == 0 {
			return errNoNetwork(name)
		}
	}
	return nil
}

// errNoNetwork: a policy verifies in the isolated network, which the
// environment does not name (at cold start and, for a state of an older
// configuration, at launch).
func errNoNetwork(policy string) error {
	return fmt.Errorf("policy %q verifies in the isolated network, but %s and %s are not set: deploy with the stack (it creates the network and sets both), or give the policy verify.subnetId and verify.securityGroupId",
		policy, EnvSubnets, EnvSecurityGroup)
}

// Verifier runs the actions.
type Verifier struct {
	runner.Job
	EC2     EC2
	Config  *config.Config
	Network Network
}

// Request is one invocation of the function.
type Request struct {
	Action string `json:"action"`
	// Input (start): the execution input, a verify trigger (trigger.ParseVerify).
	Input json.RawMessage `json:"input,omitempty"`
	// State (step, cleanup, finish): what the previous action returned.
	State *State `json:"state,omitempty"`
}

// Result of start, step and cleanup.
type Result struct {
	State       *State `json:"state"`
	Done        bool   `json:"done"`
	WaitSeconds int    `json:"waitSeconds"`
}

// Handle parses one request strictly (unknown fields, nulls, duplicate keys
// and trailing data are errors naming the field; nothing is called) and
// runs it. The result is a *Result or, for finish, a *Summary.
func (v *Verifier) Handle(ctx context.Context, raw []byte) (any, error) {
	var req Request
	err := trigger.StrictDecode(raw, &req, "input")
	if err == nil {
		err = req.check()
	}
	if err != nil {
		v.Log.Error("rejected input; nothing was changed", "error", err.Error())
		return nil, err
	}
	switch req.Action {
	case ActionStart:
		return v.Start(ctx, req.Input)
	case ActionStep:
		return v.Step(ctx, req.State)
	case ActionCleanup:
		return v.Cleanup(ctx, req.State)
	default:
		return v.Finish(ctx, req.State)
	}
}

func (req Request) check() error {
	switch req.Action {
	case ActionStart:
		if len(req.Input) == 0 || req.State != nil {
			return fmt.Errorf("input: action %q takes input (the execution input: a Scheduler input or a Verify Requested event) and no state", req.Action)
		}
	case ActionStep, ActionCleanup, ActionFinish:
		if req.State == nil || len(req.Input) != 0 {
			return fmt.Errorf("input: action %q takes state (what the previous action returned) and no input", req.Action)
		}
	default:
		return fmt.Errorf("input.action: %q is not allowed: use %q, %q, %q or %q", req.Action, ActionStart, ActionStep, ActionCleanup, ActionFinish)
	}
	return nil
}
