package stacks

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/drain"
	"github.com/amibackup/amibackup/pkg/tags"
)

const testConfig = `{"deployment":"prod","alarms":{"email":"ops@example.com"},"logRetentionDays":90,
 "recycleBin":{"imageRetentionDays":10,"snapshotRetentionDays":14},
 "policies":[
  {"name":"nightly","selector":{"tagKey":"Backup","tagValues":["nightly"]},
   "schedule":{"expression":"cron(0 3 * * ? *)","timeZone":"Europe/Berlin"},"retention":{"daily":7}},
  {"name":"weekly","selector":{"tagKey":"BackupWeekly"},
   "schedule":{"expression":"cron(30 1 ? * SUN *)","timeZone":"America/New_York"},"retention":{"weekly":8}}]}`

// wavesConfig: one policy rebooting in waves (the workflow), one without
// an availability section (the backup function, as before).
const wavesConfig = `{"deployment":"prod","policies":[
  {"name":"web","selector":{"tagKey":"Backup","tagValues":["web"]},
   "schedule":{"expression":"cron(0 3 * * ? *)","timeZone":"Europe/Berlin"},"retention":{"daily":7},
   "availability":{"groupBy":["asg","targetGroup","tag:Service"],"maxUnavailable":1,"healthTimeout":"10m"}},
  {"name":"weekly","selector":{"tagKey":"BackupWeekly"},
   "schedule":{"expression":"cron(30 1 ? * SUN *)","timeZone":"America/New_York"},"retention":{"weekly":8}}]}`

func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// requireNode fails clearly when the jsii runtime cannot find Node.js.
func requireNode(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is not on PATH: the Go CDK needs Node.js; run `make tools` and use `make test` (it puts Node 22 from .tools on PATH)")
	}
}

func synth(t testing.TB, cfgJSON string) (awscdk.Stack, map[string]any) {
	t.Helper()
	return synthIn(t, cfgJSON, t.TempDir())
}

func synthIn(t testing.TB, cfgJSON, outdir string) (awscdk.Stack, map[string]any) {
	t.Helper()
	requireNode(t)
	app := awscdk.NewApp(&awscdk.AppProps{
		Context: &map[string]any{ContextConfig: cfgJSON, ContextStack: "AmiBackupTest"},
		Outdir:  jsii.String(outdir),
	})
	stack, err := Build(app, repoRoot(t))
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	tmpl := assertions.Template_FromStack(stack, nil)
	return stack, *tmpl.ToJSON()
}

func resources(tmpl map[string]any, typ string) map[string]map[string]any {
	out := map[string]map[string]any{}
	for id, r := range tmpl["Resources"].(map[string]any) {
		r := r.(map[string]any)
		if r["Type"] == typ {
			props, _ := r["Properties"].(map[string]any)
			out[id] = props
		}
	}
	return out
}

func TestTemplate(t *testing.T) {
	stack, tmpl := synthCached(t, testConfig)
	template := assertions.Template_FromJSON(&tmpl, nil)

	t.Run("schedules per policy with time zone, input, retries and DLQ", func(t *testing.T) {
		for _, tc := range []struct{ name, expr, tz, input string }{
			{"backup-nightly", "cron(0 3 * * ? *)", "Europe/Berlin", `{"policy":"nightly","time":"<aws.scheduler.scheduled-time>"}`},
			{"backup-weekly", "cron(30 1 ? * SUN *)", "America/New_York", `{"policy":"weekly","time":"<aws.scheduler.scheduled-time>"}`},
			{"prune", "cron(0 5 * * ? *)", "Europe/Berlin", `{"time":"<aws.scheduler.scheduled-time>"}`},
		} {
			template.HasResourceProperties(jsii.String("AWS::Scheduler::Schedule"), map[string]any{
				"Name": tc.name, "ScheduleExpression": tc.expr, "ScheduleExpressionTimezone": tc.tz,
				"FlexibleTimeWindow": map[string]any{"Mode": "OFF"},
				"Target": assertions.Match_ObjectLike(&map[string]any{
					"Input":            tc.input,
					"RetryPolicy":      map[string]any{"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 3600},
					"DeadLetterConfig": assertions.Match_ObjectLike(&map[string]any{"Arn": assertions.Match_AnyValue()}),
				}),
			})
		}
		template.ResourceCountIs(jsii.String("AWS::Scheduler::Schedule"), jsii.Number(3))
	})

	t.Run("manual-run rules", func(t *testing.T) {
		for _, dt := range []string{"Backup Requested", "Prune Requested"} {
			template.HasResourceProperties(jsii.String("AWS::Events::Rule"), map[string]any{
				"EventPattern": map[string]any{"source": []string{"amibackup"}, "detail-type": []string{dt}},
			})
		}
		template.HasResourceProperties(jsii.String("AWS::Events::Rule"), map[string]any{
			"EventPattern": map[string]any{"source": []string{"aws.ec2"}, "detail-type": []string{"EC2 AMI State Change"}, "detail": map[string]any{"State": []string{"failed"}}},
		})
	})

	t.Run("functions", func(t *testing.T) {
		// Backup, prune and rollout: both policies reboot without an
		// availability section, so both reboot in waves (the default).
		fns := resources(tmpl, "AWS::Lambda::Function")
		if len(fns) != 3 {
			t.Fatalf("%d functions", len(fns))
		}
		for id, p := range fns {
			if p["Runtime"] != "provided.al2023" || p["Handler"] != "bootstrap" || p["Timeout"] != 900.0 ||
				!slices.Equal(toStrings(p["Architectures"]), []string{"arm64"}) {
				t.Errorf("%s: %v", id, p)
			}
			if lc, _ := p["LoggingConfig"].(map[string]any); lc["LogFormat"] != "JSON" || lc["ApplicationLogLevel"] != "INFO" || lc["LogGroup"] == nil {
				t.Errorf("%s: logging config %v, want JSON format, INFO, own log group", id, p["LoggingConfig"])
			}
			env := p["Environment"].(map[string]any)["Variables"].(map[string]any)
			cfg, err := config.Parse([]byte(env[config.EnvVar].(string)), "")
			if err != nil || cfg.Deployment != "prod" || len(cfg.Policies) != 2 {
				t.Errorf("%s: AMIBACKUP_CONFIG does not parse back: %v", id, err)
			}
		}
		template.ResourcePropertiesCountIs(jsii.String("AWS::Logs::LogGroup"), map[string]any{"RetentionInDays": 90}, jsii.Number(3))
	})

	t.Run("recycle bin", func(t *testing.T) {
		for typ, days := range map[string]int{"EC2_IMAGE": 10, "EBS_SNAPSHOT": 14} {
			template.HasResourceProperties(jsii.String("AWS::Rbin::Rule"), map[string]any{
				"ResourceType":    typ,
				"RetentionPeriod": map[string]any{"RetentionPeriodUnit": "DAYS", "RetentionPeriodValue": days},
				"ResourceTags":    []any{map[string]any{"ResourceTagKey": tags.ManagedBy, "ResourceTagValue": "prod"}},
			})
		}
	})

	t.Run("alarms to one topic with e-mail", func(t *testing.T) {
		// 3 function errors, DLQ, 2 per policy, prune blocked, prune
		// failures, workflow failed, 2 per policy rebooting in waves.
		template.ResourceCountIs(jsii.String("AWS::CloudWatch::Alarm"), jsii.Number(3+1+2*2+2+1+2*2))
		template.ResourceCountIs(jsii.String("AWS::SNS::Topic"), jsii.Number(1))
		template.HasResourceProperties(jsii.String("AWS::SNS::Subscription"), map[string]any{"Protocol": "email", "Endpoint": "ops@example.com"})
		template.HasResourceProperties(jsii.String("AWS::CloudWatch::Alarm"), map[string]any{
			"MetricName": "InstancesSelected", "Namespace": "amibackup",
			"Dimensions":         []any{map[string]any{"Name": "Policy", "Value": "weekly"}},
			"ComparisonOperator": "LessThanOrEqualToThreshold", "Threshold": 0,
		})
		for id, a := range resources(tmpl, "AWS::CloudWatch::Alarm") {
			if len(a["AlarmActions"].([]any)) != 1 {
				t.Errorf("alarm %s has no action", id)
			}
		}
	})

	t.Run("least-privilege IAM", func(t *testing.T) {
		checkIAM(t, tmpl, "prod", map[string][]string{"Backup": {"nightly"}, "BackupWeekly": nil})
		sts := statements(tmpl, "AWS::IAM::Policy")
		for sel, sid := range map[string]string{"Backup": "CreateImageOfSelectedInstances0", "BackupWeekly": "CreateImageOfSelectedInstances1"} {
			s := bySid(t, sts, sid)[0]
			if !slices.Equal(s.Actions, []string{"ec2:CreateImage"}) || !slices.Equal(s.Resources, []string{"arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:instance/*"}) {
				t.Errorf("%s %+v", sid, s)
			}
			if sel == "Backup" && !slices.Equal(cond(s, "StringEquals", "aws:ResourceTag/Backup"), []string{"nightly"}) ||
				sel == "BackupWeekly" && !slices.Equal(cond(s, "Null", "aws:ResourceTag/BackupWeekly"), []string{"false"}) {
				t.Errorf("%s condition %v", sid, s.Condition)
			}
		}
		for _, s := range bySid(t, sts, "WriteOwnLogs") {
			if len(s.Resources) != 1 || !strings.HasSuffix(s.Resources[0], ".Arn>:*") {
				t.Errorf("log statement %s: %v", s.Policy, s.Resources)
			}
		}
	})

	t.Run("scheduler role invokes only the scheduled functions", func(t *testing.T) { checkSchedulerInvokes(t, tmpl) })
	t.Run("dashboard", func(t *testing.T) {
		checkDashboard(t, tmpl, "prod", "InstancesSelected", "ImagesCreated", "ImagesFailed", "BackupDuration", "ImagesPruned")
	})
	t.Run("stack tags", func(t *testing.T) { checkStackTags(t, tmpl, "prod") })

	if !*stack.TerminationProtection() {
		t.Error("termination protection is off by default")
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

var destructive = []string{"ec2:DeregisterImage", "ec2:DeleteSnapshot", "ec2:EnableImageDeprecation",
	"ec2:ModifyImageAttribute", "ec2:ModifySnapshotAttribute", "ec2:DisableImageDeprecation"}

// checkIAM fails if any destructive action is allowed without the
// managed-by condition, CreateImage on instances lacks the selection tag,
// CreateTags lacks ec2:CreateAction, or anything is granted with a wildcard
// action or a managed policy.
func checkIAM(t *testing.T, tmpl map[string]any, deployment string, selectors map[string][]string) {
	t.Helper()
	for _, p := range iamProblems(tmpl, deployment, selectors) {
		t.Error(p)
	}
}

func iamProblems(tmpl map[string]any, deployment string, selectors map[string][]string) []string {
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	for id, r := range resources(tmpl, "AWS::IAM::Role") {
		if mp, ok := r["ManagedPolicyArns"]; ok {
			fail("role %s has managed policies %v", id, mp)
		}
	}
	seenCreateInstance := map[string]bool{}
	for id, p := range resources(tmpl, "AWS::IAM::Policy") {
		for _, s := range p["PolicyDocument"].(map[string]any)["Statement"].([]any) {
			st := s.(map[string]any)
			if st["Effect"] == "Deny" {
				continue // a Deny only narrows
			}
			actions := asList(st["Action"])
			cond, _ := st["Condition"].(map[string]any)
			condJSON, _ := json.Marshal(cond)
			for _, a := range actions {
				if a == "*" || strings.HasSuffix(a, ":*") {
					fail("%s: wildcard action %s", id, a)
				}
				if slices.Contains(destructive, a) {
					eq, _ := cond["StringEquals"].(map[string]any)
					if eq["aws:ResourceTag/"+tags.ManagedBy] != deployment {
						fail("%s: %s allowed without aws:ResourceTag/%s=%s: %s", id, a, tags.ManagedBy, deployment, condJSON)
					}
				}
				if a == "ec2:CreateTags" {
					// Either only while creating (CreateImage/CopyImage), or only
					// named keys on resources we manage (the share state).
					eq, _ := cond["StringEquals"].(map[string]any)
					keys, _ := cond["ForAllValues:StringEquals"].(map[string]any)
					// Or, for the reboot waves, only the drain tag on instances.
					drainOnly := slices.Equal(asList(keys["aws:TagKeys"]), []string{drain.TagKey}) && strings.HasSuffix(flatten(st["Resource"]), ":instance/*")
					if eq["ec2:CreateAction"] == nil && !drainOnly && (eq["aws:ResourceTag/"+tags.ManagedBy] != deployment || keys["aws:TagKeys"] == nil) {
						fail("%s: CreateTags without ec2:CreateAction, or without managed-by and aws:TagKeys conditions", id)
					}
				}
				if a == "ec2:CreateImage" {
					res, _ := json.Marshal(st["Resource"])
					if strings.Contains(string(res), "instance/*") {
						matched := false
						for key := range selectors {
							if strings.Contains(string(condJSON), "aws:ResourceTag/"+key+`"`) {
								seenCreateInstance[key] = true
								matched = true
							}
						}
						if !matched {
							fail("%s: CreateImage on instances without a selection-tag condition: %s", id, condJSON)
						}
					} else if !strings.Contains(string(condJSON), "aws:RequestTag/"+tags.ManagedBy) {
						fail("%s: CreateImage on images/snapshots without aws:RequestTag/%s: %s", id, tags.ManagedBy, condJSON)
					}
				}
			}
		}
	}
	for key := range selectors {
		if !seenCreateInstance[key] {
			fail("no CreateImage statement for selection tag %s", key)
		}
	}
	return problems
}

// stmt is one IAM statement with its resources flattened the way cdk-nag
// spells them (arn:<AWS::Partition>:ec2:<AWS::Region>::image/*).
type stmt struct {
	Policy, Sid, Effect string
	Actions, Resources  []string
	Condition           map[string]any
	Principal           any
}

// statements returns the statements of every policy document of the
// resources of type typ (IAM policies, trust policies, key policies, topic
// and queue policies) in the template.
func statements(tmpl map[string]any, typ string) []stmt {
	var out []stmt
	docKey := map[string]string{"AWS::IAM::Policy": "PolicyDocument", "AWS::KMS::Key": "KeyPolicy", "AWS::IAM::Role": "AssumeRolePolicyDocument",
		"AWS::SNS::TopicPolicy": "PolicyDocument", "AWS::SQS::QueuePolicy": "PolicyDocument"}[typ]
	for id, p := range resources(tmpl, typ) {
		doc, _ := p[docKey].(map[string]any)
		list, _ := doc["Statement"].([]any)
		for _, s := range list {
			st := s.(map[string]any)
			x := stmt{Policy: id, Effect: fmt.Sprint(st["Effect"]), Principal: st["Principal"]}
			x.Sid, _ = st["Sid"].(string)
			x.Actions = asList(st["Action"])
			x.Condition, _ = st["Condition"].(map[string]any)
			rs, ok := st["Resource"].([]any)
			if !ok {
				rs = []any{st["Resource"]}
			}
			for _, r := range rs {
				x.Resources = append(x.Resources, flatten(r))
			}
			out = append(out, x)
		}
	}
	return out
}

// flatten mirrors cdk-nag's flattenCfnReference.
func flatten(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case map[string]any:
		if j, ok := x["Fn::Join"].([]any); ok {
			var parts []string
			for _, p := range j[1].([]any) {
				parts = append(parts, flatten(p))
			}
			return strings.Join(parts, j[0].(string))
		}
		if g, ok := x["Fn::GetAtt"].([]any); ok {
			return "<" + flatten(g[0]) + "." + flatten(g[1]) + ">"
		}
		if r, ok := x["Ref"]; ok {
			return "<" + flatten(r) + ">"
		}
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// bySid returns the statements with the Sid; it fails the test if there are none.
func bySid(t *testing.T, sts []stmt, sid string) []stmt {
	t.Helper()
	var out []stmt
	for _, s := range sts {
		if s.Sid == sid {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no statement %s", sid)
	}
	return out
}

// cond returns a condition's values for operator and key, flattened (nil when absent).
func cond(s stmt, op, key string) []string {
	m, _ := s.Condition[op].(map[string]any)
	v, ok := m[key]
	if !ok {
		return nil
	}
	list, ok := v.([]any)
	if !ok {
		list = []any{v}
	}
	var out []string
	for _, x := range list {
		out = append(out, flatten(x))
	}
	return out
}

// hasAction: s allows action (no wildcards are allowed, so exact match).
func hasAction(s stmt, action string) bool { return slices.Contains(s.Actions, action) }

func asList(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		return toStrings(x)
	}
	return nil
}

// TestCheckIAMCatchesMissingCondition proves the IAM check can fail.
func TestCheckIAMCatchesMissingCondition(t *testing.T) {
	bad := map[string]any{"Resources": map[string]any{"P": map[string]any{"Type": "AWS::IAM::Policy", "Properties": map[string]any{
		"PolicyDocument": map[string]any{"Statement": []any{map[string]any{"Action": "ec2:DeregisterImage", "Resource": "*"}}}}}}}
	if len(iamProblems(bad, "prod", nil)) == 0 {
		t.Fatal("checkIAM accepted DeregisterImage without the managed-by condition")
	}
}

func TestCdkNagClean(t *testing.T) {
	stack, _ := synthCached(t, testConfig)
	nagErrors(t, stack)
}

func TestInvalidConfigFailsSynth(t *testing.T) {
	err := buildError(t, `{"policies":[{"name":"Bad Name","selector":{},"schedule":{"expression":"daily"},"retention":{}}]}`)
	wantMentions(t, err, "policies[0].name", "policies[0].selector.tagKey", "policies[0].schedule.expression", "policies[0].retention")
	// A file path in -c works too, and reports a missing file clearly.
	if _, err := ConfigFromContext("/nonexistent/amibackup.json", "X"); err == nil || !strings.Contains(err.Error(), "read configuration file") {
		t.Errorf("missing file: %v", err)
	}
	f := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(f, []byte(testConfig), 0o644)
	if c, err := ConfigFromContext(f, "X"); err != nil || c.Deployment != "prod" {
		t.Errorf("config file: %v", err)
	}
}

// TestAssetHashStable: the same source gives the same asset (so a re-deploy
// updates no function); a source change gives a new one.
func TestAssetHashStable(t *testing.T) {
	key := func() []string {
		_, tmpl := synth(t, testConfig)
		var keys []string
		for _, fn := range resources(tmpl, "AWS::Lambda::Function") {
			keys = append(keys, fn["Code"].(map[string]any)["S3Key"].(string))
		}
		slices.Sort(keys)
		return keys
	}
	a, b := key(), key()
	// Backup, prune and rollout (testConfig's policies reboot in waves).
	if !slices.Equal(a, b) || len(a) != 3 || len(slices.Compact(slices.Clone(a))) != 3 {
		t.Fatalf("asset keys differ between identical synths: %v vs %v", a, b)
	}
	// A copy of the sources with one changed byte hashes differently.
	root := repoRoot(t)
	h1, err := SourceHash(root, "backup")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	for _, f := range []string{"go.mod", "go.sum", "functions/backup/main.go", "pkg/tags/tags.go"} {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(filepath.Join(tmp, f)), 0o755)
		os.WriteFile(filepath.Join(tmp, f), data, 0o644)
	}
	c1, _ := SourceHash(tmp, "backup")
	os.WriteFile(filepath.Join(tmp, "pkg/tags/tags.go"), []byte("package tags // changed\n"), 0o644)
	c2, _ := SourceHash(tmp, "backup")
	if c1 == c2 || c1 == h1 {
		t.Fatalf("hash does not follow the sources: %s %s %s", h1, c1, c2)
	}
}

func BenchmarkSynth(b *testing.B) {
	for b.Loop() {
		start := time.Now()
		synth(b, testConfig)
		b.ReportMetric(time.Since(start).Seconds(), "s/synth")
	}
}

// nagErrors fails the test for every cdk-nag AwsSolutions error on s.
func nagErrors(t *testing.T, s awscdk.Stack) {
	t.Helper()
	errs := assertions.Annotations_FromStack(s).FindError(jsii.String("*"), assertions.Match_StringLikeRegexp(jsii.String("AwsSolutions-.*")))
	for _, e := range *errs {
		t.Errorf("cdk-nag: %s %v", *e.Id, e.Entry.Data)
	}
}

// buildError is Build's error for a configuration that must not
// synthesize; the test fails if it does.
func buildError(t *testing.T, cfgJSON string) error {
	t.Helper()
	requireNode(t)
	app := awscdk.NewApp(&awscdk.AppProps{Context: &map[string]any{ContextConfig: cfgJSON}, Outdir: jsii.String(t.TempDir())})
	_, err := Build(app, repoRoot(t))
	if err == nil {
		t.Fatal("invalid configuration synthesized")
	}
	return err
}

// wantMentions fails the test for each of wants err does not mention.
func wantMentions(t *testing.T, err error, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q: %v", want, err)
		}
	}
}
