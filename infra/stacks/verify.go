package stacks

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatchactions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awseventstargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsstepfunctions"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/metrics"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/trigger"
	"github.com/amibackup/amibackup/pkg/verify"
)

// State names of the verification workflow (the local runs override the
// Wait states by name).
const (
	VerifyStateStart          = "Start"
	VerifyStateStarted        = "Started?"
	VerifyStateWait           = "Wait"
	VerifyStateStep           = "Step"
	VerifyStateStepDone       = "All booted?"
	VerifyStateCleanup        = "Clean up"
	VerifyStateCleanedUp      = "Cleaned up?"
	VerifyStateCleanupWait    = "Wait to clean up"
	VerifyStateFinish         = "Finish"
	VerifyStateOnError        = "Clean up after error"
	VerifyStateOnErrorDone    = "Cleaned up after error?"
	VerifyStateOnErrorWait    = "Wait to clean up after error"
	VerifyStateFailed         = "Failed"
	VerifyStateFinishedFailed = "Finished with problems"
	VerifyStateSucceeded      = "Succeeded"
)

// verifyInstanceTagKeys are the only tag keys the verify role may put on
// the instances and volumes it launches (aws:TagKeys).
var verifyInstanceTagKeys = []string{tags.ManagedBy, tags.VerifyOf, tags.Policy}

// verifyImageTagKeys are the only tag keys the verify role may set or
// remove on images: the verification result.
var verifyImageTagKeys = []string{tags.Verified, tags.Verify, tags.VerifyError}

// verifyPolicies are the policies with a verify section.
func verifyPolicies(cfg *config.Config) []config.Policy {
	var out []config.Policy
	for _, p := range cfg.Policies {
		if p.Verify != nil {
			out = append(out, p)
		}
	}
	return out
}

// Verification is restore verification (issue 14): the verify function, a
// Standard state machine calling it in the action loop (pkg/verify's
// contract: start, step until done, cleanup until done, finish), one
// Scheduler schedule per verifying policy, the "Verify Requested" rule,
// the isolated network (when a verifying policy names no subnet), alarms.
type Verification struct {
	Function     *AmiFunction
	StateMachine awsstepfunctions.StateMachine
	Role         awsiam.Role
	// Network is nil when every verifying policy names its own subnet.
	Network *VerifyNetwork
	// Alarms by what they watch (tests, README).
	FailedAlarm                           awscloudwatch.Alarm
	FailuresAlarms, AgeAlarms, LeftAlarms []awscloudwatch.Alarm
}

// NewVerification adds restore verification for the verifying policies of
// cfg; nil (and nothing added) when no policy verifies.
func NewVerification(c *Common, cfg *config.Config, root string) (*Verification, error) {
	policies := verifyPolicies(cfg)
	if len(policies) == 0 {
		return nil, nil
	}
	stack := c.Stack
	v := &Verification{}
	for _, p := range policies {
		if p.Verify.Isolated() {
			v.Network = NewVerifyNetwork(stack, cfg)
			break
		}
	}
	subnets, groups := v.placement(stack, policies)
	var err error
	if v.Function, err = NewAmiFunction(stack, &AmiFunctionProps{Name: verify.Function, Config: cfg, Root: root,
		Statements: verifyStatements(stack, cfg, policies, subnets, groups), Wildcards: verifyWildcards(stack),
		Notifications: c.Notifications}); err != nil {
		return nil, err
	}
	if v.Network != nil {
		// The network of the policies without their own subnet (pkg/verify
		// reads both; neither is set without the network).
		v.Function.AddEnvironment(jsii.String(verify.EnvSubnets), awscdk.Fn_Join(jsii.String(","), jsii.Strings(v.Network.SubnetIDs...)), nil)
		v.Function.AddEnvironment(jsii.String(verify.EnvSecurityGroup), v.Network.SecurityGroup.SecurityGroupId(), nil)
	}
	// The states live in their own scope: their names are construct IDs,
	// and the rollout's states (same names) are in the stack's.
	states := constructs.NewConstruct(stack, jsii.String("VerifyStates"))
	start := actionLoop(states, loopProps{Function: v.Function,
		Actions: loopActions{Start: verify.ActionStart, Step: verify.ActionStep, Cleanup: verify.ActionCleanup, Finish: verify.ActionFinish},
		States: loopStates{Start: VerifyStateStart, Started: VerifyStateStarted, Wait: VerifyStateWait, Step: VerifyStateStep, StepDone: VerifyStateStepDone,
			Cleanup: VerifyStateCleanup, CleanedUp: VerifyStateCleanedUp, CleanupWait: VerifyStateCleanupWait, Finish: VerifyStateFinish,
			OnError: VerifyStateOnError, OnErrorDone: VerifyStateOnErrorDone, OnErrorWait: VerifyStateOnErrorWait,
			Failed: VerifyStateFailed, FinishedFailed: VerifyStateFinishedFailed, Succeeded: VerifyStateSucceeded},
		FailedError: "VerifyFailed", FailedCause: "a task failed; see the execution's events (the instances the run launched were terminated first, or are left to the next run's sweep)",
		ProblemsError: "VerifyProblems", ProblemsCause: "an image failed its verification or an instance could not be terminated: see the finish error and the verify summary log",
		CleanupErrorPath: "$.cleanupError"})
	v.StateMachine, v.Role = loopMachine(stack, loopMachineProps{ID: "VerifyWorkflow", Function: v.Function, Start: start, InvokeSid: "InvokeVerify",
		Comment:  "amibackup: restore verification, boots backups in isolation (" + cfg.Deployment + ")",
		RoleDesc: "amibackup verification workflow invokes the verify function (" + cfg.Deployment + ")"})

	for i, p := range cfg.Policies {
		if p.Verify == nil {
			continue
		}
		// Numbered by the policy's index: adding verify to another policy
		// renames nothing.
		c.Schedules.AddStateMachine(fmt.Sprintf("VerifySchedule%d", i), "verify-"+p.Name, p.Verify.Schedule, v.StateMachine, SchedulerInput(p.Name))
	}
	// Manual runs: one rule for every policy; the function rejects a policy
	// without a verify section at start (a failed execution, alarmed),
	// instead of the rule dropping the request silently.
	rule := awsevents.NewRule(stack, jsii.String("VerifyRequestedRule"), &awsevents.RuleProps{
		Description:  jsii.String("amibackup manual restore verification: source " + trigger.Source + ", detail-type " + trigger.VerifyRequested),
		EventPattern: &awsevents.EventPattern{Source: jsii.Strings(trigger.Source), DetailType: jsii.Strings(trigger.VerifyRequested)},
	})
	rule.AddTarget(awseventstargets.NewSfnStateMachine(v.StateMachine, &awseventstargets.SfnStateMachineProps{
		DeadLetterQueue: c.Notifications.DeadLetters,
		RetryAttempts:   jsii.Number(2),
		MaxEventAge:     awscdk.Duration_Hours(jsii.Number(1)),
	}))
	v.alarms(c, cfg)
	return v, nil
}

// placement: the subnet and security group ARNs verification instances may
// use: the isolated network's and each policy's own.
func (v *Verification) placement(stack awscdk.Stack, policies []config.Policy) (subnets, groups []string) {
	if v.Network != nil {
		for _, id := range v.Network.SubnetIDs {
			subnets = append(subnets, arn(stack, "subnet/"+id))
		}
		groups = append(groups, arn(stack, "security-group/"+*v.Network.SecurityGroup.SecurityGroupId()))
	}
	for _, p := range policies {
		if p.Verify.Isolated() {
			continue
		}
		if s := arn(stack, "subnet/"+p.Verify.SubnetID); !slices.Contains(subnets, s) {
			subnets = append(subnets, s)
		}
		if g := arn(stack, "security-group/"+p.Verify.SecurityGroupID); !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
	}
	return subnets, groups
}

// verifyInstanceTypes are every type a verifying policy may launch (both
// architectures, defaults included), sorted.
func verifyInstanceTypes(policies []config.Policy) []string {
	var out []string
	for _, p := range policies {
		for _, arch := range []string{config.ArchX86_64, config.ArchARM64} {
			if t, ok := p.Verify.InstanceTypeFor(arch); ok && !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
	}
	slices.Sort(out)
	return out
}

// verifyStatements: the verify role's permissions (README "Restore
// verification", IAM table). Every action, resource type and condition key
// is from the Service Authorization Reference, Amazon EC2 and AWS KMS
// (checked offline by TestIAMReference).
//
// RunInstances authorizes every resource of the request separately, each
// against the statements naming its type; a condition key a resource type
// does not have makes its statement not apply (so the resources are split
// by the keys they carry):
//   - image (and the AMI's snapshots, an optional resource type evaluated
//     for EBS-backed AMIs): only this account's (ec2:Owner) images and
//     snapshots tagged with this deployment's managed-by;
//   - instance: only the configured instance types, only with our tags in
//     the request (managed-by = deployment, verify-of present, no other
//     keys), so whatever is launched can be found and terminated;
//   - volume: the same tags;
//   - subnet and security group: only the isolated network's and the
//     policies' own, by ARN; network interface: only in those subnets;
//   - no key pair, instance profile (no iam:PassRole), launch template or
//     placement group statement: a request naming one is denied.
func verifyStatements(stack awscdk.Stack, cfg *config.Config, policies []config.Policy, subnets, groups []string) []awsiam.PolicyStatement {
	ourTags := map[string]any{
		"StringEquals":              map[string]any{"aws:RequestTag/" + tags.ManagedBy: cfg.Deployment},
		"ForAllValues:StringEquals": map[string]any{"aws:TagKeys": verifyInstanceTagKeys},
		"Null":                      map[string]any{"aws:RequestTag/" + tags.VerifyOf: "false"},
	}
	instanceTags := map[string]any{
		"StringEquals":              map[string]any{"aws:RequestTag/" + tags.ManagedBy: cfg.Deployment, "ec2:InstanceType": verifyInstanceTypes(policies)},
		"ForAllValues:StringEquals": ourTags["ForAllValues:StringEquals"],
		"Null":                      ourTags["Null"],
	}
	viaEC2 := map[string]any{"kms:ViaService": fmt.Sprintf("ec2.%s.amazonaws.com", *stack.Region())}
	return []awsiam.PolicyStatement{
		statement("DescribeNeedsWildcard", []string{"ec2:DescribeImages", "ec2:DescribeInstances", "ec2:DescribeInstanceStatus"}, []string{"*"}, nil),
		statement("LaunchOnlyOurImages", []string{"ec2:RunInstances"}, []string{imageARN(stack, "image/*"), imageARN(stack, "snapshot/*")},
			map[string]any{"StringEquals": map[string]any{"aws:ResourceTag/" + tags.ManagedBy: cfg.Deployment, "ec2:Owner": stack.Account()}}),
		statement("LaunchOnlyTaggedInstances", []string{"ec2:RunInstances"}, []string{arn(stack, "instance/*")}, instanceTags),
		statement("LaunchOnlyTaggedVolumes", []string{"ec2:RunInstances"}, []string{arn(stack, "volume/*")}, ourTags),
		statement("LaunchOnlyIntoVerifyNetwork", []string{"ec2:RunInstances"}, append(slices.Clone(subnets), groups...), nil),
		statement("NetworkInterfacesOnlyInVerifySubnets", []string{"ec2:RunInstances"}, []string{arn(stack, "network-interface/*")},
			map[string]any{"ArnEquals": map[string]any{"ec2:Subnet": subnets}}),
		statement("TagOnlyWhileLaunching", []string{"ec2:CreateTags"}, []string{arn(stack, "instance/*"), arn(stack, "volume/*")},
			map[string]any{"StringEquals": map[string]any{"ec2:CreateAction": "RunInstances"}}),
		statement("TerminateOnlyVerifyInstances", []string{"ec2:TerminateInstances"}, []string{arn(stack, "instance/*")},
			map[string]any{"StringEquals": map[string]any{"aws:ResourceTag/" + tags.ManagedBy: cfg.Deployment},
				"Null": map[string]any{"aws:ResourceTag/" + tags.VerifyOf: "false"}}),
		// Null aws:TagKeys false: DeleteTags without Tags deletes every tag
		// of the image (EC2 API reference, DeleteTags), and ForAllValues is
		// true for a request without keys.
		statement("RecordResultOnOurImages", []string{"ec2:CreateTags", "ec2:DeleteTags"}, []string{imageARN(stack, "image/*")},
			map[string]any{"StringEquals": map[string]any{"aws:ResourceTag/" + tags.ManagedBy: cfg.Deployment},
				"ForAllValues:StringEquals": map[string]any{"aws:TagKeys": verifyImageTagKeys},
				"Null":                      map[string]any{"aws:TagKeys": "false"}}),
		// Launching from an AMI whose snapshots are encrypted with a
		// customer-managed key: what EBS encryption needs from the caller
		// (EBS encryption requirements; kms:ReEncrypt* spelled out), only
		// through EC2 in this Region, grants only for AWS resources. The
		// keys of the backed-up volumes are not known here: this account's
		// keys in this Region (a key of another account fails that image's
		// verification with EC2's reason).
		statement("UseVolumeKeysThroughEC2", []string{"kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo"},
			[]string{verifyKeys(stack)}, map[string]any{"StringEquals": viaEC2}),
		statement("GrantVolumeKeysToEC2", []string{"kms:CreateGrant"}, []string{verifyKeys(stack)},
			map[string]any{"StringEquals": viaEC2, "Bool": grantForAWSResource["Bool"]}),
	}
}

func verifyKeys(stack awscdk.Stack) string {
	return fmt.Sprintf("arn:%s:kms:%s:%s:key/*", *stack.Partition(), *stack.Region(), *stack.Account())
}

func verifyWildcards(stack awscdk.Stack) []Wildcard {
	return []Wildcard{
		{"*", describeReason},
		{imageARN(stack, "image/*"), "RunInstances only from this account's images tagged with this deployment's managed-by tag (aws:ResourceTag, ec2:Owner); CreateTags/DeleteTags only on those images and only the verification result keys (aws:TagKeys); image IDs are not known in advance."},
		{imageARN(stack, "snapshot/*"), "RunInstances only with this account's snapshots tagged with this deployment's managed-by tag (the snapshots of our images); snapshot IDs are not known in advance."},
		{arn(stack, "instance/*"), "RunInstances only creating instances of the configured types tagged managed-by and verify-of (aws:RequestTag, aws:TagKeys); TerminateInstances only on instances carrying both tags; CreateTags only as part of RunInstances (ec2:CreateAction); instance IDs are not known in advance."},
		{arn(stack, "volume/*"), "RunInstances only creating volumes tagged managed-by and verify-of (aws:RequestTag, aws:TagKeys); CreateTags only as part of RunInstances; volume IDs are not known in advance."},
		{arn(stack, "network-interface/*"), "RunInstances creates the instance's network interface only in the verification subnets (ec2:Subnet); its ID is not known in advance."},
		{verifyKeys(stack), "The keys of the backed-up volumes are not known here: this account's keys in this Region, used only through EC2 (kms:ViaService), grants only for AWS resources (kms:GrantIsForAWSResource)."},
	}
}

// alarms: a failed execution; per policy, failed verifications, the age of
// the newest verified backup and instances left running.
func (v *Verification) alarms(c *Common, cfg *config.Config) {
	n := c.Notifications
	v.FailedAlarm = n.AlarmOnAny("VerifyWorkflowFailedAlarm", "amibackup verification workflow execution failed (see the execution's events and the verify summary log)",
		v.StateMachine.MetricFailed(nil))
	for i, p := range cfg.Policies {
		if p.Verify == nil {
			continue
		}
		v.FailuresAlarms = append(v.FailuresAlarms, n.AlarmOnAny(fmt.Sprintf("VerifyFailuresAlarm%d", i),
			"amibackup policy "+p.Name+": backups failed their restore verification (tags "+tags.Verify+", "+tags.VerifyError+")",
			metric(metrics.VerifyFailures, p.Name, "Sum", hourly())))
		v.AgeAlarms = append(v.AgeAlarms, v.ageAlarm(c, i, p))
		v.LeftAlarms = append(v.LeftAlarms, n.AlarmOnAny(fmt.Sprintf("VerifyInstancesLeftAlarm%d", i),
			"amibackup policy "+p.Name+": verification instances could not be terminated (tag "+tags.VerifyOf+"; the next run's sweep retries)",
			metric(metrics.VerifyInstancesLeft, p.Name, "Maximum", hourly())))
	}
}

// maxAlarmDays: CloudWatch evaluates an alarm over at most 7 days
// (Period x EvaluationPeriods <= 604,800 s for periods of an hour or more;
// PutMetricAlarm, EvaluationPeriods).
const maxAlarmDays = 7

// ageAlarm: "no verified backup younger than maxVerifiedAge". The verify
// function reports VerifiedAgeHours once per run, so most days have no
// data. When the verify schedule runs at least weekly, a missing day counts
// as breaching and the alarm looks at the last N = ceil(maxVerifiedAge)
// days (at most 7): it fires when no run in that window reported an age
// within the limit, which also catches runs that stopped. A schedule
// rarer than weekly cannot be covered by CloudWatch's 7-day window: there
// missing data is ignored and the alarm keeps the last run's verdict
// (stopped runs are then caught by the execution, errors and dead-letter
// alarms only).
func (v *Verification) ageAlarm(c *Common, i int, p config.Policy) awscloudwatch.Alarm {
	maxAge := p.Verify.MaxAge()
	days, missing := 1, awscloudwatch.TreatMissingData_IGNORE
	if atLeastWeekly(p.Verify.Schedule.Expression) {
		days = min(maxAlarmDays, max(1, int(math.Ceil(maxAge.Hours()/24))))
		missing = awscloudwatch.TreatMissingData_BREACHING
	}
	a := awscloudwatch.NewAlarm(c.Stack, jsii.String(fmt.Sprintf("VerifiedAgeAlarm%d", i)), &awscloudwatch.AlarmProps{
		AlarmDescription: jsii.String(fmt.Sprintf("amibackup policy %s: no verified backup younger than %s reported in the last %d day(s) (VerifiedAgeHours above %g)",
			p.Name, fmtAge(maxAge), days, maxAge.Hours())),
		Metric:             metric(metrics.VerifiedAgeHours, p.Name, "Maximum", daily()),
		Threshold:          jsii.Number(maxAge.Hours()),
		EvaluationPeriods:  jsii.Number(float64(days)),
		DatapointsToAlarm:  jsii.Number(float64(days)),
		ComparisonOperator: awscloudwatch.ComparisonOperator_GREATER_THAN_THRESHOLD,
		TreatMissingData:   missing,
	})
	a.AddAlarmAction(awscloudwatchactions.NewSnsAction(c.Notifications.Topic))
	return a
}

func fmtAge(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return strings.TrimSuffix(d.String(), "0m0s")
}

var rateExprRE = regexp.MustCompile(`^rate\((\d+) (minute|hour|day)s?\)$`)

// atLeastWeekly: the schedule expression (validated by pkg/config) runs at
// least once in every 7 days: a rate of at most 7 days, or a cron
// expression for every day of month of every month and year whose
// day-of-week field names plain days (no "L" or "#": those are monthly).
func atLeastWeekly(expr string) bool {
	if m := rateExprRE.FindStringSubmatch(expr); m != nil {
		n, _ := strconv.Atoi(m[1])
		unit := map[string]time.Duration{"minute": time.Minute, "hour": time.Hour, "day": 24 * time.Hour}[m[2]]
		return time.Duration(n)*unit <= 7*24*time.Hour
	}
	f := strings.Fields(strings.TrimSuffix(strings.TrimPrefix(expr, "cron("), ")"))
	if len(f) != 6 {
		return false
	}
	dom, month, dow, year := f[2], f[3], f[4], f[5]
	anyDay := dom == "*" || dom == "?"
	return anyDay && month == "*" && year == "*" && !strings.ContainsAny(dow, "L#")
}

// verifyWidgets are the dashboard's verification row.
func verifyWidgets(cfg *config.Config) [][]awscloudwatch.IWidget {
	var verified, failures, age []awscloudwatch.IMetric
	for _, p := range verifyPolicies(cfg) {
		verified = append(verified, metric(metrics.ImagesVerified, p.Name, "Sum", daily()))
		failures = append(failures, metric(metrics.VerifyFailures, p.Name, "Sum", daily()))
		age = append(age, metric(metrics.VerifiedAgeHours, p.Name, "Maximum", daily()))
	}
	if len(verified) == 0 {
		return nil
	}
	return [][]awscloudwatch.IWidget{
		{graph("Images verified", verified...), graph("Verification failures", failures...)},
		{graph("Verified backup age (hours)", age...)},
	}
}
