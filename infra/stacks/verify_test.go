package stacks

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/sfnlocal"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/verify"
)

// verifyConfig: "web" verifies in the stack's isolated network (weekly,
// default maxVerifiedAge 8d), "db" in its own subnet and security group
// (monthly, 40d), "weekly" does not verify.
const verifyConfig = `{"deployment":"prod","policies":[
  {"name":"web","selector":{"tagKey":"Backup","tagValues":["web"]},
   "schedule":{"expression":"cron(0 3 * * ? *)","timeZone":"Europe/Berlin"},"retention":{"daily":7},
   "verify":{"schedule":{"expression":"cron(0 6 ? * SUN *)","timeZone":"Europe/Berlin"}}},
  {"name":"db","selector":{"tagKey":"BackupDB"},
   "schedule":{"expression":"cron(0 2 * * ? *)","timeZone":"UTC"},"retention":{"daily":7},
   "verify":{"schedule":{"expression":"cron(0 4 1 * ? *)","timeZone":"UTC"},"instanceType":{"x86_64":"m5.large"},"maxVerifiedAge":"40d",
    "subnetId":"subnet-0123456789abcdef0","securityGroupId":"sg-0123456789abcdef0","maxConcurrent":10,"timeout":"30m"}},
  {"name":"weekly","selector":{"tagKey":"BackupWeekly"},
   "schedule":{"expression":"cron(30 1 ? * SUN *)","timeZone":"America/New_York"},"retention":{"weekly":8}}]}`

// ownSubnetConfig: the only verifying policy names its own subnet, so the
// stack creates no network and sets no network environment.
const ownSubnetConfig = `{"deployment":"prod","policies":[
  {"name":"db","selector":{"tagKey":"BackupDB"},
   "schedule":{"expression":"cron(0 2 * * ? *)","timeZone":"UTC"},"retention":{"daily":7},
   "verify":{"schedule":{"expression":"rate(3 days)"},"subnetId":"subnet-0123456789abcdef0","securityGroupId":"sg-0123456789abcdef0","maxVerifiedAge":"4d"}}]}`

// verifyPolicyDoc is the verify function's policy: its statements by Sid.
func verifyPolicyDoc(t *testing.T, tmpl map[string]any) map[string]stmt {
	t.Helper()
	out := map[string]stmt{}
	for _, s := range statements(tmpl, "AWS::IAM::Policy") {
		if strings.HasPrefix(s.Policy, "VerifyPolicy") {
			out[s.Sid] = s
		}
	}
	if len(out) == 0 {
		t.Fatal("no VerifyPolicy")
	}
	return out
}

func logicalIDs(tmpl map[string]any, typ, prefix string) []string {
	var ids []string
	for id := range resources(tmpl, typ) {
		if strings.HasPrefix(id, prefix) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// TestVerificationOnlyWithVerifyPolicy: the verify function, workflow,
// rule, schedules and alarms exist only with a verifying policy, the
// network only when one verifies without its own subnet.
func TestVerificationOnlyWithVerifyPolicy(t *testing.T) {
	for _, tc := range []struct {
		name, cfg                           string
		function, machines, schedules, vpcs int
		network                             bool
	}{
		{"no verify section", testConfig, 0, 0, 0, 0, false},
		{"isolated and own subnet", verifyConfig, 1, 1, 2, 1, true},
		{"own subnet only", ownSubnetConfig, 1, 1, 1, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, tmpl := synthCached(t, tc.cfg)
			count := func(typ, prefix string) int { return len(logicalIDs(tmpl, typ, prefix)) }
			for _, c := range []struct {
				what      string
				got, want int
			}{
				{"verify function", count("AWS::Lambda::Function", "Verify"), tc.function},
				{"verify state machine", count("AWS::StepFunctions::StateMachine", "VerifyWorkflow"), tc.machines},
				{"verify schedules", count("AWS::Scheduler::Schedule", "VerifySchedule"), tc.schedules},
				{"Verify Requested rule", count("AWS::Events::Rule", "VerifyRequestedRule"), tc.function},
				{"VPC", count("AWS::EC2::VPC", ""), tc.vpcs},
				{"security groups", count("AWS::EC2::SecurityGroup", ""), tc.vpcs},
				{"flow logs", count("AWS::EC2::FlowLog", ""), tc.vpcs},
				{"default SG restriction", count("Custom::VpcRestrictDefaultSG", ""), tc.vpcs},
				{"verification alarms", count("AWS::CloudWatch::Alarm", "Verif"), tc.function * (2 + 3*tc.schedules)},
			} {
				if c.got != c.want {
					t.Errorf("%s: %d, want %d", c.what, c.got, c.want)
				}
			}
			for id, fn := range resources(tmpl, "AWS::Lambda::Function") {
				env, _ := fn["Environment"].(map[string]any)
				vars, _ := env["Variables"].(map[string]any)
				_, subnets := vars[verify.EnvSubnets]
				_, sg := vars[verify.EnvSecurityGroup]
				want := tc.network && strings.HasPrefix(id, "Verify")
				if subnets != want || sg != want {
					t.Errorf("%s: %s set %v, %s set %v, want %v", id, verify.EnvSubnets, subnets, verify.EnvSecurityGroup, sg, want)
				}
			}
		})
	}
}

// TestVerifyNetworkIsolated: nothing in the template could carry a packet
// out of the verification VPC.
func TestVerifyNetworkIsolated(t *testing.T) {
	_, tmpl := synthCached(t, verifyConfig)
	for _, typ := range []string{"AWS::EC2::InternetGateway", "AWS::EC2::EgressOnlyInternetGateway", "AWS::EC2::NatGateway", "AWS::EC2::EIP",
		"AWS::EC2::VPCGatewayAttachment", "AWS::EC2::Route", "AWS::EC2::VPCEndpoint", "AWS::EC2::VPCPeeringConnection",
		"AWS::EC2::TransitGatewayAttachment", "AWS::EC2::TransitGatewayVpcAttachment", "AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress",
		"AWS::EC2::VPNGatewayRoutePropagation", "AWS::EC2::VPCCidrBlock"} {
		if n := len(resources(tmpl, typ)); n != 0 {
			t.Errorf("%d %s in the template", n, typ)
		}
	}
	raw, _ := json.Marshal(tmpl)
	if strings.Contains(string(raw), "0.0.0.0/0") || strings.Contains(string(raw), "::/0") {
		t.Error("the template names 0.0.0.0/0 or ::/0")
	}
	// No Amazon DNS server: security groups cannot filter the Route 53
	// Resolver, so DNS would be a way out.
	for id, v := range resources(tmpl, "AWS::EC2::VPC") {
		if v["EnableDnsSupport"] != false || v["EnableDnsHostnames"] != false {
			t.Errorf("VPC %s: EnableDnsSupport %v, EnableDnsHostnames %v: want both false", id, v["EnableDnsSupport"], v["EnableDnsHostnames"])
		}
	}
	subnets := resources(tmpl, "AWS::EC2::Subnet")
	if len(subnets) != 2 { // environment-agnostic: CDK's two Fn::GetAZs zones
		t.Errorf("%d subnets, want one per zone (2 without an environment)", len(subnets))
	}
	for id, s := range subnets {
		if s["MapPublicIpOnLaunch"] != false {
			t.Errorf("subnet %s: MapPublicIpOnLaunch %v", id, s["MapPublicIpOnLaunch"])
		}
	}
	// Each route table only of the isolated subnets, with no route.
	for id, r := range resources(tmpl, "AWS::EC2::SubnetRouteTableAssociation") {
		if !strings.Contains(flatten(r["SubnetId"]), "Isolated") {
			t.Errorf("%s associates %v", id, r["SubnetId"])
		}
	}
	sgs := resources(tmpl, "AWS::EC2::SecurityGroup")
	for id, sg := range sgs {
		if _, ok := sg["SecurityGroupIngress"]; ok {
			t.Errorf("%s has ingress %v", id, sg["SecurityGroupIngress"])
		}
		// CDK's placeholder for "no egress": without any egress rule EC2
		// would add its default allow-all rule.
		want := []any{map[string]any{"CidrIp": "255.255.255.255/32", "Description": "Disallow all traffic", "FromPort": 252.0, "IpProtocol": "icmp", "ToPort": 86.0}}
		if got, _ := json.Marshal(sg["SecurityGroupEgress"]); string(got) != mustJSON(want) {
			t.Errorf("%s egress %s, want only the disallow-all placeholder", id, got)
		}
	}
	for id, v := range resources(tmpl, "AWS::EC2::VPC") {
		if _, ok := v["Ipv6CidrBlock"]; ok {
			t.Errorf("%s has IPv6", id)
		}
	}
	// Flow logs: all traffic of the VPC to a log group of the deployment's
	// retention, written by a role only this account's flow logs assume.
	for id, fl := range resources(tmpl, "AWS::EC2::FlowLog") {
		if fl["ResourceType"] != "VPC" || fl["TrafficType"] != "ALL" || fl["LogDestinationType"] != "cloud-watch-logs" ||
			!strings.HasPrefix(flatten(fl["LogGroupName"]), "<VerifyFlowLogs") || !strings.HasPrefix(flatten(fl["DeliverLogsPermissionArn"]), "<VerifyFlowLogRole") {
			t.Errorf("flow log %s: %v", id, fl)
		}
	}
	for id, lg := range resources(tmpl, "AWS::Logs::LogGroup") {
		if strings.HasPrefix(id, "VerifyFlowLogs") && lg["RetentionInDays"] != 30.0 {
			t.Errorf("%s retention %v", id, lg["RetentionInDays"])
		}
	}
	var trust []stmt
	for _, s := range statements(tmpl, "AWS::IAM::Role") {
		if strings.HasPrefix(s.Policy, "VerifyFlowLogRole") {
			trust = append(trust, s)
		}
	}
	if len(trust) != 1 || len(cond(trust[0], "StringEquals", "aws:SourceAccount")) != 1 ||
		!slices.Equal(cond(trust[0], "ArnLike", "aws:SourceArn"), []string{"arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:vpc-flow-log/*"}) {
		t.Errorf("flow log role trust: %+v", trust)
	}
	for _, s := range statements(tmpl, "AWS::IAM::Policy") {
		if strings.HasPrefix(s.Policy, "VerifyFlowLogPolicy") &&
			(!slices.Equal(s.Actions, []string{"logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"}) || len(s.Resources) != 1 || !strings.HasPrefix(s.Resources[0], "<VerifyFlowLogs")) {
			t.Errorf("flow log policy: %+v", s)
		}
	}
	// CDK's provider of restrictDefaultSecurityGroup (cdk-nag does not
	// inspect it): its inline policy only changes the rules of this VPC's
	// default group; its one managed policy is Lambda's basic logging.
	// A CDK upgrade that widens either fails here.
	provider := 0
	for id, r := range resources(tmpl, "AWS::IAM::Role") {
		if !strings.HasPrefix(id, "CustomVpcRestrictDefaultSGCustomResourceProviderRole") {
			continue
		}
		provider++
		if got := mustJSON(r["ManagedPolicyArns"]); got != `[{"Fn::Sub":"arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"}]` {
			t.Errorf("%s managed policies %s", id, got)
		}
		for _, ip := range r["Policies"].([]any) {
			for _, st := range ip.(map[string]any)["PolicyDocument"].(map[string]any)["Statement"].([]any) {
				st := st.(map[string]any)
				res := st["Resource"].([]any)
				if st["Effect"] != "Allow" || st["Condition"] != nil || len(res) != 1 ||
					flatten(res[0]) != "arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:security-group/<VerifyNetwork04918AFE.DefaultSecurityGroup>" ||
					!slices.Equal(asList(st["Action"]), []string{"ec2:AuthorizeSecurityGroupIngress", "ec2:AuthorizeSecurityGroupEgress", "ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress"}) {
					t.Errorf("%s statement %v", id, st)
				}
			}
		}
	}
	if provider != 1 {
		t.Errorf("%d default security group providers", provider)
	}
	// The function boots in these subnets and this group.
	var vars map[string]any
	for _, id := range logicalIDs(tmpl, "AWS::Lambda::Function", "Verify") {
		vars = resources(tmpl, "AWS::Lambda::Function")[id]["Environment"].(map[string]any)["Variables"].(map[string]any)
	}
	got := flatten(vars[verify.EnvSubnets])
	if !strings.Contains(got, "<VerifyNetworkIsolatedSubnet1Subnet") || !strings.Contains(got, ",<VerifyNetworkIsolatedSubnet2Subnet") {
		t.Errorf("%s = %s", verify.EnvSubnets, got)
	}
	if got := flatten(vars[verify.EnvSecurityGroup]); !strings.HasPrefix(got, "<VerifySecurityGroup") || !strings.HasSuffix(got, ".GroupId>") {
		t.Errorf("%s = %s", verify.EnvSecurityGroup, got)
	}
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestVerifyIAM: the verify role's statements, exactly.
func TestVerifyIAM(t *testing.T) {
	_, tmpl := synthCached(t, verifyConfig)
	const (
		p      = "arn:<AWS::Partition>:ec2:<AWS::Region>:"
		acct   = "arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:"
		keys   = "arn:<AWS::Partition>:kms:<AWS::Region>:<AWS::AccountId>:key/*"
		viaEC2 = "ec2.<AWS::Region>.amazonaws.com"
	)
	subnets := []string{acct + "subnet/<VerifyNetworkIsolatedSubnet1Subnet5D6CCEC6>", acct + "subnet/<VerifyNetworkIsolatedSubnet2Subnet3C13591E>", acct + "subnet/subnet-0123456789abcdef0"}
	groups := []string{acct + "security-group/<VerifySecurityGroup6C457D9D.GroupId>", acct + "security-group/sg-0123456789abcdef0"}
	instanceKeys := []string{tags.ManagedBy, tags.VerifyOf, tags.Policy}
	type c = struct {
		op, key string
		values  []string
	}
	ourTags := []c{{"StringEquals", "aws:RequestTag/" + tags.ManagedBy, []string{"prod"}}, {"ForAllValues:StringEquals", "aws:TagKeys", instanceKeys},
		{"Null", "aws:RequestTag/" + tags.VerifyOf, []string{"false"}}}
	want := []struct {
		sid       string
		actions   []string
		resources []string
		conds     []c
	}{
		{"DescribeNeedsWildcard", []string{"ec2:DescribeImages", "ec2:DescribeInstances", "ec2:DescribeInstanceStatus"}, []string{"*"}, nil},
		{"LaunchOnlyOurImages", []string{"ec2:RunInstances"}, []string{p + ":image/*", p + ":snapshot/*"},
			[]c{{"StringEquals", "aws:ResourceTag/" + tags.ManagedBy, []string{"prod"}}, {"StringEquals", "ec2:Owner", []string{"<AWS::AccountId>"}}}},
		{"LaunchOnlyTaggedInstances", []string{"ec2:RunInstances"}, []string{acct + "instance/*"},
			append(slices.Clone(ourTags), c{"StringEquals", "ec2:InstanceType", []string{"m5.large", "t3.small", "t4g.small"}})},
		{"LaunchOnlyTaggedVolumes", []string{"ec2:RunInstances"}, []string{acct + "volume/*"}, ourTags},
		{"LaunchOnlyIntoVerifyNetwork", []string{"ec2:RunInstances"}, append(slices.Clone(subnets), groups...), nil},
		{"NetworkInterfacesOnlyInVerifySubnets", []string{"ec2:RunInstances"}, []string{acct + "network-interface/*"}, []c{{"ArnEquals", "ec2:Subnet", subnets}}},
		{"TagOnlyWhileLaunching", []string{"ec2:CreateTags"}, []string{acct + "instance/*", acct + "volume/*"}, []c{{"StringEquals", "ec2:CreateAction", []string{"RunInstances"}}}},
		{"TerminateOnlyVerifyInstances", []string{"ec2:TerminateInstances"}, []string{acct + "instance/*"},
			[]c{{"StringEquals", "aws:ResourceTag/" + tags.ManagedBy, []string{"prod"}}, {"Null", "aws:ResourceTag/" + tags.VerifyOf, []string{"false"}}}},
		{"RecordResultOnOurImages", []string{"ec2:CreateTags", "ec2:DeleteTags"}, []string{p + ":image/*"},
			[]c{{"StringEquals", "aws:ResourceTag/" + tags.ManagedBy, []string{"prod"}}, {"ForAllValues:StringEquals", "aws:TagKeys", []string{tags.Verified, tags.Verify, tags.VerifyError}},
				{"Null", "aws:TagKeys", []string{"false"}}}},
		{"UseVolumeKeysThroughEC2", []string{"kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo"}, []string{keys},
			[]c{{"StringEquals", "kms:ViaService", []string{viaEC2}}}},
		{"GrantVolumeKeysToEC2", []string{"kms:CreateGrant"}, []string{keys},
			[]c{{"StringEquals", "kms:ViaService", []string{viaEC2}}, {"Bool", "kms:GrantIsForAWSResource", []string{"true"}}}},
		{"WriteOwnLogs", []string{"logs:CreateLogStream", "logs:PutLogEvents"}, []string{"<VerifyLogs13DFEC9B.Arn>:*"}, nil},
	}
	got := verifyPolicyDoc(t, tmpl)
	for _, w := range want {
		s, ok := got[w.sid]
		if !ok {
			t.Errorf("no statement %s", w.sid)
			continue
		}
		delete(got, w.sid)
		if s.Effect != "Allow" || !slices.Equal(s.Actions, w.actions) || !slices.Equal(s.Resources, w.resources) {
			t.Errorf("%s: %s %v on %v, want %v on %v", w.sid, s.Effect, s.Actions, s.Resources, w.actions, w.resources)
		}
		n := 0
		for _, op := range s.Condition {
			n += len(op.(map[string]any))
		}
		if n != len(w.conds) {
			t.Errorf("%s: %d condition keys %v, want %d", w.sid, n, s.Condition, len(w.conds))
		}
		for _, wc := range w.conds {
			if g := cond(s, wc.op, wc.key); !slices.Equal(g, wc.values) {
				t.Errorf("%s: %s %s = %v, want %v", w.sid, wc.op, wc.key, g, wc.values)
			}
		}
	}
	for sid := range got {
		t.Errorf("unexpected statement %s", sid)
	}

	// The state machine's role: only invoking the verify function.
	for _, s := range statements(tmpl, "AWS::IAM::Policy") {
		if strings.HasPrefix(s.Policy, "VerifyWorkflowPolicy") &&
			(s.Sid != "InvokeVerify" || !slices.Equal(s.Actions, []string{"lambda:InvokeFunction"}) || !slices.Equal(s.Resources, []string{"<Verify04AA6CE7.Arn>"}) || s.Condition != nil) {
			t.Errorf("verify workflow role: %+v", s)
		}
	}
	// The scheduler may start the verify workflow; nothing else may.
	starters := map[string]bool{}
	for _, s := range statements(tmpl, "AWS::IAM::Policy") {
		if hasAction(s, "states:StartExecution") && slices.ContainsFunc(s.Resources, func(r string) bool { return strings.HasPrefix(r, "<VerifyWorkflow") }) {
			starters[s.Policy[:strings.IndexAny(s.Policy, "0123456789ABCDEF")]] = true
		}
	}
	if !starters["SchedulerPolicy"] || len(starters) != 2 { // the Verify Requested rule's role
		t.Errorf("roles that start the verify workflow: %v", starters)
	}

	// The project-wide checks: destructive actions only on managed-by,
	// CreateTags only while creating or on named keys, no wildcard action,
	// no managed policy, except CDK's provider of the default security
	// group restriction (AWSLambdaBasicExecutionRole: its own logs; it runs
	// at deploy time only; see README "Restore verification").
	for _, problem := range iamProblems(tmpl, "prod", map[string][]string{"Backup": {"web"}, "BackupDB": nil, "BackupWeekly": nil}) {
		if strings.HasPrefix(problem, "role CustomVpcRestrictDefaultSGCustomResourceProviderRole") && strings.Contains(problem, "AWSLambdaBasicExecutionRole") {
			continue
		}
		t.Error(problem)
	}
	checkGrants(t, tmpl)
	// The verify role's image tags and the rollout's drain tag.
	if n := checkDeleteTags(t, tmpl); n != 2 {
		t.Errorf("%d ec2:DeleteTags statements checked, want 2 (verify images, rollout drain tag)", n)
	}
}

// TestVerifyIAMReference: every action, resource and condition key of a
// verification stack is valid (Service Authorization Reference), the
// isolated network and own subnets alike.
func TestVerifyIAMReference(t *testing.T) {
	for _, cfg := range []string{verifyConfig, ownSubnetConfig} {
		_, tmpl := synthCached(t, cfg)
		findings, err := checkIAMReference(tmpl)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range findings {
			t.Error(f)
		}
	}
}

// TestVerifyAlarms: thresholds, periods and missing-data handling.
func TestVerifyAlarms(t *testing.T) {
	for _, tc := range []struct {
		cfg, id, metric, op, missing string
		threshold, period, evals     float64
	}{
		{verifyConfig, "VerifyWorkflowFailedAlarm", "ExecutionsFailed", "GreaterThanOrEqualToThreshold", "notBreaching", 1, 300, 1},
		{verifyConfig, "VerifyFailuresAlarm0", "VerifyFailures", "GreaterThanOrEqualToThreshold", "notBreaching", 1, 3600, 1},
		{verifyConfig, "VerifyFailuresAlarm1", "VerifyFailures", "GreaterThanOrEqualToThreshold", "notBreaching", 1, 3600, 1},
		{verifyConfig, "VerifyInstancesLeftAlarm0", "VerifyInstancesLeft", "GreaterThanOrEqualToThreshold", "notBreaching", 1, 3600, 1},
		// web: weekly schedule, default 8d: 7 days (CloudWatch's limit)
		// without a report within 192 h.
		{verifyConfig, "VerifiedAgeAlarm0", "VerifiedAgeHours", "GreaterThanThreshold", "breaching", 192, 86400, 7},
		// db: monthly schedule: the last run's verdict (40d = 960 h).
		{verifyConfig, "VerifiedAgeAlarm1", "VerifiedAgeHours", "GreaterThanThreshold", "ignore", 960, 86400, 1},
		// rate(3 days), 4d: 4 days without a report within 96 h.
		{ownSubnetConfig, "VerifiedAgeAlarm0", "VerifiedAgeHours", "GreaterThanThreshold", "breaching", 96, 86400, 4},
	} {
		t.Run(tc.id, func(t *testing.T) {
			_, tmpl := synthCached(t, tc.cfg)
			ids := logicalIDs(tmpl, "AWS::CloudWatch::Alarm", tc.id)
			if len(ids) != 1 {
				t.Fatalf("alarms %s: %v", tc.id, ids)
			}
			a := resources(tmpl, "AWS::CloudWatch::Alarm")[ids[0]]
			dp, ok := a["DatapointsToAlarm"]
			if !ok {
				dp = a["EvaluationPeriods"]
			}
			if a["MetricName"] != tc.metric || a["ComparisonOperator"] != tc.op || a["TreatMissingData"] != tc.missing ||
				a["Threshold"] != tc.threshold || a["Period"] != tc.period || a["EvaluationPeriods"] != tc.evals || dp != tc.evals ||
				len(a["AlarmActions"].([]any)) != 1 {
				t.Errorf("%s: %v", ids[0], a)
			}
			if tc.metric != "ExecutionsFailed" {
				if d := a["Dimensions"].([]any)[0].(map[string]any); d["Name"] != "Policy" || d["Value"] != map[bool]string{true: "web", false: "db"}[strings.HasSuffix(tc.id, "0") && tc.cfg == verifyConfig] {
					t.Errorf("%s dimensions %v", ids[0], a["Dimensions"])
				}
			}
		})
	}
}

func TestAtLeastWeekly(t *testing.T) {
	for expr, want := range map[string]bool{
		"rate(1 hour)": true, "rate(7 days)": true, "rate(8 days)": false, "rate(10080 minutes)": true, "rate(10081 minutes)": false,
		"cron(0 3 * * ? *)": true, "cron(0 6 ? * SUN *)": true, "cron(0 6 ? * MON-FRI *)": true,
		"cron(0 4 1 * ? *)": false, "cron(0 4 ? * 2#1 *)": false, "cron(0 4 ? * 6L *)": false, "cron(0 4 * 1 ? *)": false, "cron(0 4 * * ? 2027)": false,
	} {
		if got := atLeastWeekly(expr); got != want {
			t.Errorf("atLeastWeekly(%q) = %v, want %v", expr, got, want)
		}
	}
}

// TestVerifySchedulesAndRule: one schedule per verifying policy with its
// own expression and time zone, the backup schedules' input, retry policy
// and dead-letter queue, starting the verify workflow; the manual rule.
func TestVerifySchedulesAndRule(t *testing.T) {
	_, tmpl := synthCached(t, verifyConfig)
	template := assertions.Template_FromJSON(&tmpl, nil)
	sm := logicalIDs(tmpl, "AWS::StepFunctions::StateMachine", "VerifyWorkflow")
	if len(sm) != 1 {
		t.Fatalf("verify state machines %v", sm)
	}
	for _, tc := range []struct{ id, name, expr, tz, policy string }{
		{"VerifySchedule0", "verify-web", "cron(0 6 ? * SUN *)", "Europe/Berlin", "web"},
		{"VerifySchedule1", "verify-db", "cron(0 4 1 * ? *)", "UTC", "db"},
	} {
		ids := logicalIDs(tmpl, "AWS::Scheduler::Schedule", tc.id)
		if len(ids) != 1 {
			t.Fatalf("%s: %v", tc.id, ids)
		}
		s := resources(tmpl, "AWS::Scheduler::Schedule")[ids[0]]
		target := s["Target"].(map[string]any)
		retry, _ := json.Marshal(target["RetryPolicy"])
		if s["Name"] != tc.name || s["ScheduleExpression"] != tc.expr || s["ScheduleExpressionTimezone"] != tc.tz ||
			target["Input"] != fmt.Sprintf(`{"policy":%q,"time":"<aws.scheduler.scheduled-time>"}`, tc.policy) ||
			flatten(target["Arn"]) != "<"+sm[0]+">" || string(retry) != `{"MaximumEventAgeInSeconds":3600,"MaximumRetryAttempts":3}` ||
			!strings.HasPrefix(flatten(target["DeadLetterConfig"].(map[string]any)["Arn"]), "<DeadLetterQueue") {
			t.Errorf("%s: %v", tc.id, s)
		}
	}
	// A verify schedule without timeZone runs in UTC (CloudFormation
	// rejects an empty ScheduleExpressionTimezone).
	_, own := synthCached(t, ownSubnetConfig)
	for _, id := range logicalIDs(own, "AWS::Scheduler::Schedule", "VerifySchedule") {
		if s := resources(own, "AWS::Scheduler::Schedule")[id]; s["ScheduleExpressionTimezone"] != "UTC" || s["ScheduleExpression"] != "rate(3 days)" {
			t.Errorf("%s: %v", id, s)
		}
	}
	template.HasResourceProperties(jsii.String("AWS::Events::Rule"), map[string]any{
		"EventPattern": map[string]any{"source": []string{"amibackup"}, "detail-type": []string{"Verify Requested"}},
		"Targets": assertions.Match_ArrayWith(&[]any{assertions.Match_ObjectLike(&map[string]any{
			"Arn":              map[string]any{"Ref": sm[0]},
			"RetryPolicy":      map[string]any{"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600},
			"DeadLetterConfig": assertions.Match_AnyValue(),
		})}),
	})
	// Dashboard: the verification widgets and the verify function's runs
	// (checkDashboard wants every function charted; CDK's default security
	// group provider is not ours to chart).
	for _, d := range resources(tmpl, "AWS::CloudWatch::Dashboard") {
		body := flatten(d["DashboardBody"])
		for _, want := range []string{`"ImagesVerified"`, `"VerifyFailures"`, `"VerifiedAgeHours"`, `"Verification failures"`, "<Verify04AA6CE7>"} {
			if !strings.Contains(body, want) {
				t.Errorf("dashboard does not show %s", want)
			}
		}
	}
}

// TestWorkflowDefinitionsRunOffline: both synthesized state machines (the
// rollout's and verification's, built by actionLoop) pass the local
// engine's checks (JSONPath only, Lambda tasks, asl-validator), and the
// verification loop calls the verify function with its contract's actions.
func TestWorkflowDefinitionsRunOffline(t *testing.T) {
	eng, err := sfnlocal.FindEngine(repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cfg, prefix, fn string
		actions         []string
	}{
		{wavesConfig, "Workflow", "Rollout", []string{"start", "step", "restore", "finish"}},
		{verifyConfig, "VerifyWorkflow", "Verify", []string{verify.ActionStart, verify.ActionStep, verify.ActionCleanup, verify.ActionFinish}},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			_, tmpl := synthCached(t, tc.cfg)
			raw, _ := json.Marshal(tmpl)
			ids := logicalIDs(tmpl, "AWS::StepFunctions::StateMachine", tc.prefix)
			if len(ids) != 1 {
				t.Fatalf("%v", ids)
			}
			def, err := sfnlocal.Resolve(raw, ids[0], nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := eng.Check(context.Background(), def); err != nil {
				t.Fatal(err)
			}
			var d struct {
				StartAt string
				States  map[string]struct {
					Type     string
					Resource string
					// payloadResponseOnly: the function's ARN as the
					// resource, the payload as the parameters.
					Parameters map[string]any
				}
			}
			if err := json.Unmarshal(def, &d); err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for name, s := range d.States {
				if s.Type != "Task" {
					continue
				}
				if s.Resource != sfnlocal.LocalFunctionARN(functionLogicalID(t, tmpl, tc.fn)) {
					t.Errorf("%s calls %s", name, s.Resource)
				}
				seen[fmt.Sprint(s.Parameters["action"])] = true
			}
			for _, a := range tc.actions {
				if !seen[a] {
					t.Errorf("no task calls action %q (%v)", a, seen)
				}
			}
			if d.StartAt != "Start" || len(d.States) != 15 {
				t.Errorf("StartAt %s, %d states", d.StartAt, len(d.States))
			}
		})
	}
}

func functionLogicalID(t *testing.T, tmpl map[string]any, prefix string) string {
	t.Helper()
	for id := range resources(tmpl, "AWS::Lambda::Function") {
		if strings.HasPrefix(id, prefix) && len(id) == len(prefix)+8 {
			return id
		}
	}
	t.Fatalf("no function %s", prefix)
	return ""
}

// TestVerifyNagClean: cdk-nag reports no error and no warning.
func TestVerifyNagClean(t *testing.T) {
	for _, cfg := range []string{verifyConfig, ownSubnetConfig} {
		stack, _ := synthCached(t, cfg)
		nagErrors(t, stack)
		if warns := assertions.Annotations_FromStack(stack).FindWarning(jsii.String("*"), assertions.Match_StringLikeRegexp(jsii.String("AwsSolutions-.*"))); len(*warns) > 0 {
			for _, w := range *warns {
				t.Errorf("cdk-nag warning %s %v", *w.Id, w.Entry.Data)
			}
		}
	}
}

// TestVerifyEnvironmentFits: with the largest configuration the function
// budget allows (maxConfigEnvBytes), the network variables still fit
// Lambda's 4 KB: up to verifyMaxAzs subnet IDs of 24 characters and a
// security group ID of 20.
func TestVerifyEnvironmentFits(t *testing.T) {
	subnets := strings.TrimSuffix(strings.Repeat("subnet-0123456789abcdef0,", verifyMaxAzs), ",")
	n := maxConfigEnvBytes + len(verify.EnvSubnets) + len(subnets) + len(verify.EnvSecurityGroup) + len("sg-0123456789abcdef0")
	if n > 4096 {
		t.Errorf("environment up to %d bytes, over Lambda's 4096", n)
	}
}

// TestVerifyNamesFitLimits: the verification resources' names fit their
// limits with the longest names pkg/config allows (a 64-character
// deployment, 32-character policy names), in the isolated network and in
// own subnets.
func TestVerifyNamesFitLimits(t *testing.T) {
	dep := "d" + strings.Repeat("0123456789abcdef", 4)[1:]
	var policies []string
	for i, c := range "abc" {
		own := ""
		if i == 2 {
			own = `,"subnetId":"subnet-0123456789abcdef0","securityGroupId":"sg-0123456789abcdef0"`
		}
		policies = append(policies, fmt.Sprintf(`{"name":%q,"selector":{"tagKey":"Backup"},"schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7},
		 "verify":{"schedule":{"expression":"cron(0 6 ? * SUN *)","timeZone":"America/Argentina/ComodRivadavia"},"instanceType":{"x86_64":"m7i-flex.16xlarge","arm64":"c7gn.16xlarge"}%s}}`,
			strings.Repeat("p", 31)+string(c), own))
	}
	cfg := fmt.Sprintf(`{"deployment":%q,"policies":[%s]}`, dep, strings.Join(policies, ","))
	_, tmpl := synthCached(t, cfg)
	for _, p := range nameProblems(tmpl) {
		t.Error(p)
	}
	n := 0
	for _, id := range logicalIDs(tmpl, "AWS::Scheduler::Schedule", "VerifySchedule") {
		name := resources(tmpl, "AWS::Scheduler::Schedule")[id]["Name"].(string)
		if !strings.HasPrefix(name, "verify-"+strings.Repeat("p", 31)) || len(name) != len("verify-")+32 {
			t.Errorf("%s: name %q, want verify-<policy> unchanged", id, name)
		}
		n++
	}
	if n != 3 {
		t.Errorf("%d verify schedules", n)
	}
}
