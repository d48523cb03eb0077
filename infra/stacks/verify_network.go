package stacks

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/config"
)

// verifyMaxAzs: one isolated subnet in each of up to 3 Availability Zones
// (an instance type missing in one zone is launched in the next). An
// environment-agnostic stack gets 2 (CDK's Fn::GetAZs selection); with an
// account and Region, CDK looks the zones up at synth (cdk.context.json).
const verifyMaxAzs = 3

// verifyCIDR and verifySubnetMask: the VPC's addresses (no route leaves the
// VPC, so overlapping with other networks does no harm) and a /24 per
// zone: 251 addresses, above config.MaxVerifyConcurrent instances.
const (
	verifyCIDR       = "10.0.0.0/16"
	verifySubnetMask = 24
)

// VerifyNetwork is where restored servers boot when a policy names no
// subnet of its own: a VPC with one private isolated subnet per zone and
// nothing else that could reach out of it:
//
//   - no internet gateway, no NAT gateway, no VPC endpoint, no peering: the
//     subnets' route tables hold only the VPC's implicit local route;
//   - SecurityGroup has no ingress rule and no egress rule. A security
//     group without SecurityGroupEgress gets EC2's default "allow all
//     outbound" rule, so CDK (allowAllOutbound false) writes one dummy
//     egress rule instead: ICMP type 252 code 86 to 255.255.255.255/32,
//     which matches no packet ("Disallow all traffic");
//   - the VPC's default security group loses its rules (restrictDefault
//     SecurityGroup: CDK's custom resource revokes them at deploy; Security
//     Hub EC2.2 / CIS 5.4 flag a default group with rules). The verify role
//     may not launch into the default group anyway (IAM allows only
//     SecurityGroup's ARN).
//   - flow logs (all traffic) to a log group of the deployment's retention:
//     the record of what a restored server tried to reach.
type VerifyNetwork struct {
	Vpc           awsec2.Vpc
	SecurityGroup awsec2.SecurityGroup
	// SubnetIDs are the isolated subnets' IDs (tokens), one per zone.
	SubnetIDs []string
	FlowLogs  awslogs.LogGroup
}

// NewVerifyNetwork adds the isolated network to scope.
func NewVerifyNetwork(scope constructs.Construct, cfg *config.Config) *VerifyNetwork {
	stack := awscdk.Stack_Of(scope)
	n := &VerifyNetwork{}
	n.Vpc = awsec2.NewVpc(scope, jsii.String("VerifyNetwork"), &awsec2.VpcProps{
		IpAddresses:           awsec2.IpAddresses_Cidr(jsii.String(verifyCIDR)),
		MaxAzs:                jsii.Number(verifyMaxAzs),
		NatGateways:           jsii.Number(0),
		CreateInternetGateway: jsii.Bool(false),
		SubnetConfiguration: &[]*awsec2.SubnetConfiguration{{
			Name: jsii.String("Isolated"), SubnetType: awsec2.SubnetType_PRIVATE_ISOLATED, CidrMask: jsii.Number(verifySubnetMask),
		}},
		RestrictDefaultSecurityGroup: jsii.Bool(true),
		// No Amazon DNS server in the VPC: security groups cannot filter
		// traffic to the Route 53 Resolver (EC2 user guide, security group
		// rules), and a resolver that recurses to the internet lets a
		// restored server send data out in DNS queries. EC2 status checks
		// do not need DNS.
		EnableDnsSupport:   jsii.Bool(false),
		EnableDnsHostnames: jsii.Bool(false),
	})
	for _, s := range *n.Vpc.IsolatedSubnets() {
		n.SubnetIDs = append(n.SubnetIDs, *s.SubnetId())
	}
	n.SecurityGroup = awsec2.NewSecurityGroup(scope, jsii.String("VerifySecurityGroup"), &awsec2.SecurityGroupProps{
		Vpc:              n.Vpc,
		AllowAllOutbound: jsii.Bool(false),
		Description:      jsii.String("amibackup " + cfg.Deployment + " restore verification: no ingress, no egress"),
	})
	n.FlowLogs = newLogGroup(scope, "VerifyFlowLogs", cfg)
	// The flow logs service's role: only this account's flow logs may use
	// it (confused deputy: aws:SourceAccount and aws:SourceArn, "IAM role
	// for publishing flow logs to CloudWatch Logs", VPC user guide), and it
	// may only write to the flow log group. Passed without policy updates,
	// so CDK adds no iam:PassRole statement of the role on itself.
	role := awsiam.NewRole(scope, jsii.String("VerifyFlowLogRole"), &awsiam.RoleProps{
		AssumedBy: awsiam.NewServicePrincipal(jsii.String("vpc-flow-logs.amazonaws.com"), &awsiam.ServicePrincipalOpts{
			Conditions: &map[string]any{
				"StringEquals": map[string]any{"aws:SourceAccount": stack.Account()},
				"ArnLike":      map[string]any{"aws:SourceArn": arn(stack, "vpc-flow-log/*")},
			},
		}),
		Description: jsii.String("VPC flow logs of the amibackup " + cfg.Deployment + " verification network"),
	})
	policy := awsiam.NewPolicy(scope, jsii.String("VerifyFlowLogPolicy"), &awsiam.PolicyProps{
		Roles: &[]awsiam.IRole{role},
		// The log group's Arn attribute ends in ":*": its streams.
		Statements: &[]awsiam.PolicyStatement{statement("WriteFlowLogs",
			[]string{"logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"}, []string{*n.FlowLogs.LogGroupArn()}, nil)},
	})
	fl := n.Vpc.AddFlowLog(jsii.String("FlowLog"), &awsec2.FlowLogOptions{
		Destination: awsec2.FlowLogDestination_ToCloudWatchLogs(n.FlowLogs, role.WithoutPolicyUpdates(nil)),
		TrafficType: awsec2.FlowLogTrafficType_ALL,
	})
	fl.Node().AddDependency(policy)
	return n
}
