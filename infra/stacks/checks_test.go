package stacks

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/tags"
)

// checkSchedulerInvokes: the scheduler role may invoke exactly the
// functions its schedules target, each by its ARN, and is assumable only
// by EventBridge Scheduler of this account.
func checkSchedulerInvokes(t *testing.T, tmpl map[string]any) {
	t.Helper()
	targets := map[string]bool{}
	for _, sc := range resources(tmpl, "AWS::Scheduler::Schedule") {
		targets[flatten(sc["Target"].(map[string]any)["Arn"])] = true
	}
	invoked := map[string]bool{}
	for _, s := range statements(tmpl, "AWS::IAM::Policy") {
		if !hasAction(s, "lambda:InvokeFunction") {
			continue
		}
		if !strings.HasPrefix(s.Policy, "SchedulerPolicy") || s.Effect != "Allow" || len(s.Actions) != 1 || len(s.Resources) != 1 || s.Condition != nil {
			t.Errorf("lambda:InvokeFunction statement %s in %s: %+v", s.Sid, s.Policy, s)
			continue
		}
		if !strings.HasSuffix(s.Resources[0], ".Arn>") {
			t.Errorf("%s invokes %s, not one function's ARN", s.Sid, s.Resources[0])
		}
		invoked[s.Resources[0]] = true
	}
	if len(targets) == 0 || !mapsEqual(targets, invoked) {
		t.Errorf("schedules target %v, the scheduler role may invoke %v", targets, invoked)
	}
	found := false
	for _, s := range statements(tmpl, "AWS::IAM::Role") {
		if p, _ := s.Principal.(map[string]any); p["Service"] == "scheduler.amazonaws.com" {
			found = true
			if len(cond(s, "StringEquals", "aws:SourceAccount")) != 1 {
				t.Errorf("scheduler trust without aws:SourceAccount: %+v", s.Condition)
			}
		}
	}
	if !found {
		t.Error("no role trusts scheduler.amazonaws.com")
	}
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// checkDashboard: one dashboard named after the deployment showing the
// metrics and every function's runs.
func checkDashboard(t *testing.T, tmpl map[string]any, deployment string, metrics ...string) {
	t.Helper()
	ds := resources(tmpl, "AWS::CloudWatch::Dashboard")
	if len(ds) != 1 {
		t.Fatalf("%d dashboards", len(ds))
	}
	for _, d := range ds {
		if d["DashboardName"] != "amibackup-"+deployment {
			t.Errorf("dashboard name %v", d["DashboardName"])
		}
		body := flatten(d["DashboardBody"])
		for _, m := range metrics {
			if !strings.Contains(body, `"`+m+`"`) {
				t.Errorf("dashboard does not show %s", m)
			}
		}
		for id := range resources(tmpl, "AWS::Lambda::Function") {
			if !strings.Contains(body, "<"+id+">") {
				t.Errorf("dashboard does not show function %s", id)
			}
		}
	}
}

// checkStackTags: the stack's tags reach the taggable resources.
func checkStackTags(t *testing.T, tmpl map[string]any, deployment string) {
	t.Helper()
	for _, typ := range []string{"AWS::Lambda::Function", "AWS::IAM::Role", "AWS::SQS::Queue", "AWS::SNS::Topic", "AWS::KMS::Key", "AWS::Logs::LogGroup"} {
		rs := resources(tmpl, typ)
		if len(rs) == 0 {
			t.Errorf("no %s", typ)
		}
		for id, r := range rs {
			got := map[string]any{}
			list, _ := r["Tags"].([]any)
			for _, tg := range list {
				tg := tg.(map[string]any)
				got[tg["Key"].(string)] = tg["Value"]
			}
			if got["amibackup:deployment"] != deployment || got["amibackup:component"] != "infrastructure" {
				t.Errorf("%s %s tags %v", typ, id, got)
			}
		}
	}
}

// checkGrants: every kms:CreateGrant, in roles and key policies, is only
// for AWS resources; no KMS action but DescribeKey on every key.
func checkGrants(t *testing.T, tmpl map[string]any) {
	t.Helper()
	n := 0
	for _, s := range append(statements(tmpl, "AWS::IAM::Policy"), statements(tmpl, "AWS::KMS::Key")...) {
		if s.Effect != "Allow" {
			continue
		}
		if hasAction(s, "kms:CreateGrant") {
			n++
			if !slices.Equal(cond(s, "Bool", "kms:GrantIsForAWSResource"), []string{"true"}) {
				t.Errorf("%s %s: kms:CreateGrant without kms:GrantIsForAWSResource: %v", s.Policy, s.Sid, s.Condition)
			}
		}
		if s.Principal != nil {
			continue // key policies: Resource "*" is the key itself
		}
		for _, a := range s.Actions {
			if strings.HasPrefix(a, "kms:") && a != "kms:DescribeKey" && slices.Contains(s.Resources, "*") {
				t.Errorf("%s %s: %s on every key", s.Policy, s.Sid, a)
			}
		}
	}
	if n == 0 {
		t.Error("no kms:CreateGrant statement checked")
	}
}

// checkShareRole: snapshots only to the configured accounts, never public;
// images and tags only on our images.
func checkShareRole(t *testing.T, tmpl map[string]any, deployment string, accounts []string) {
	t.Helper()
	sts := statements(tmpl, "AWS::IAM::Policy")
	snap := bySid(t, sts, "ShareOurSnapshotsWithTargetAccounts")[0]
	if !slices.Equal(snap.Actions, []string{"ec2:ModifySnapshotAttribute"}) || !slices.Equal(snap.Resources, []string{"arn:<AWS::Partition>:ec2:<AWS::Region>::snapshot/*"}) ||
		!slices.Equal(cond(snap, "ForAllValues:StringEquals", "ec2:Add/userId"), accounts) ||
		!slices.Equal(cond(snap, "Null", "ec2:Add/userId"), []string{"false"}) ||
		!slices.Equal(cond(snap, "StringEquals", "aws:ResourceTag/"+tags.ManagedBy), []string{deployment}) {
		t.Errorf("snapshot sharing statement %+v", snap)
	}
	deny := bySid(t, sts, "NeverMakeSnapshotsPublic")[0]
	if deny.Effect != "Deny" || !hasAction(deny, "ec2:ModifySnapshotAttribute") || !slices.Equal(cond(deny, "StringEquals", "ec2:Add/group"), []string{"all"}) {
		t.Errorf("public-snapshot deny %+v", deny)
	}
	img := bySid(t, sts, "ShareOnlyOurImages")[0]
	if !slices.Equal(img.Actions, []string{"ec2:ModifyImageAttribute"}) || !slices.Equal(img.Resources, []string{"arn:<AWS::Partition>:ec2:<AWS::Region>::image/*"}) ||
		!slices.Equal(cond(img, "StringEquals", "aws:ResourceTag/"+tags.ManagedBy), []string{deployment}) {
		t.Errorf("image sharing statement %+v", img)
	}
	// Nothing else may change attributes.
	for _, s := range sts {
		if s.Effect == "Allow" && (hasAction(s, "ec2:ModifySnapshotAttribute") || hasAction(s, "ec2:ModifyImageAttribute")) &&
			s.Sid != "ShareOurSnapshotsWithTargetAccounts" && s.Sid != "ShareOnlyOurImages" {
			t.Errorf("attribute change also allowed by %s %s", s.Policy, s.Sid)
		}
	}
}

// checkCopyRole: per statement, what the copy role may do.
func checkCopyRole(t *testing.T, tmpl map[string]any, deployment, srcRegion string, sources []string) {
	t.Helper()
	sts := statements(tmpl, "AWS::IAM::Policy")
	// CopyImage evaluates ec2:Owner on the source image only; its snapshot
	// resource is the new snapshot, so an owner clause on snapshots would
	// never match anything.
	read := bySid(t, sts, "ReadSharedSources")[0]
	if !slices.Equal(read.Actions, []string{"ec2:CopyImage"}) ||
		!slices.Equal(read.Resources, []string{"arn:<AWS::Partition>:ec2:" + srcRegion + "::image/*"}) ||
		!slices.Equal(cond(read, "StringEquals", "ec2:Owner"), sources) {
		t.Errorf("ReadSharedSources %+v", read)
	}
	// The copy key: what EBS encryption needs from the caller (EBS
	// encryption requirements), and nothing EBS does not use.
	use := bySid(t, sts, "UseCopyKey")[0]
	grant := bySid(t, sts, "GrantCopyKeyToEC2")[0]
	have := append(slices.Clone(use.Actions), grant.Actions...)
	for _, a := range []string{"kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo"} {
		if !slices.Contains(have, a) {
			t.Errorf("the copy role may not %s on the copy key: %v", a, have)
		}
	}
	if slices.Contains(have, "kms:Encrypt") || !slices.Equal(use.Resources, grant.Resources) || len(use.Resources) != 1 {
		t.Errorf("copy key statements %+v %+v", use, grant)
	}
	for _, s := range sts {
		if s.Effect == "Allow" && hasAction(s, "ec2:CopyImage") && cond(s, "StringEquals", "ec2:Owner") == nil &&
			!slices.Equal(cond(s, "StringEquals", "aws:RequestTag/"+tags.ManagedBy), []string{deployment}) {
			t.Errorf("CopyImage without ec2:Owner or the request-tag condition: %s %+v", s.Sid, s)
		}
	}
	var keys []string
	for _, a := range sources {
		keys = append(keys, "arn:<AWS::Partition>:kms:"+srcRegion+":"+a+":key/*")
	}
	for _, sid := range []string{"UseSourceKeysThroughEC2", "GrantSourceKeysToEC2"} {
		s := bySid(t, sts, sid)[0]
		if !slices.Equal(s.Resources, keys) || !slices.Contains(cond(s, "StringEquals", "kms:ViaService"), "ec2."+srcRegion+".amazonaws.com") {
			t.Errorf("%s %+v", sid, s)
		}
	}
	for sid, action := range map[string]string{"RemoveOurFailedCopies": "ec2:DeregisterImage", "RemoveOurFailedCopySnapshots": "ec2:DeleteSnapshot"} {
		s := bySid(t, sts, sid)[0]
		if !slices.Equal(s.Actions, []string{action}) || !slices.Equal(cond(s, "StringEquals", "aws:ResourceTag/"+tags.ManagedBy), []string{deployment}) {
			t.Errorf("%s %+v", sid, s)
		}
	}
}

func TestConfigSizeLimit(t *testing.T) {
	var ids []string
	for i := range 300 {
		ids = append(ids, fmt.Sprintf("%012d", 200000000000+i))
	}
	idsJSON, _ := json.Marshal(ids)
	big := `{"deployment":"huge","policies":[{"name":"nightly","selector":{"tagKey":"Backup"},"schedule":{"expression":"cron(0 3 * * ? *)"},
	  "retention":{"daily":7}}],"sharing":{"accountIds":` + string(idsJSON) + `}}`
	cfg, err := config.Parse([]byte(big), "")
	if err != nil {
		t.Fatal(err)
	}
	err = checkConfigSize(cfg, "share")
	if err == nil || !strings.Contains(err.Error(), `deployment "huge"`) || !strings.Contains(err.Error(), config.EnvVar) || !strings.Contains(err.Error(), "4 KB") {
		t.Fatalf("too large configuration: %v", err)
	}
	small, _ := config.Parse([]byte(testConfig), "")
	if err := checkConfigSize(small, "backup"); err != nil {
		t.Fatalf("test configuration rejected: %v", err)
	}
	// Synth fails with that error, before bundling anything.
	requireNode(t)
	app := awscdk.NewApp(&awscdk.AppProps{Context: &map[string]any{ContextConfig: big}, Outdir: jsii.String(t.TempDir())})
	if _, err := Build(app, repoRoot(t)); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("Build: %v", err)
	}
}

// TestNagFlagsNewWildcard: the IAM5 suppressions name their findings, so a
// wildcard nobody accepted still fails cdk-nag.
func TestNagFlagsNewWildcard(t *testing.T) {
	requireNode(t)
	cfg, err := config.Parse([]byte(recoveryConfig), "")
	if err != nil {
		t.Fatal(err)
	}
	app := awscdk.NewApp(&awscdk.AppProps{Outdir: jsii.String(t.TempDir())})
	stack := awscdk.NewStack(app, jsii.String("NagProbe"), nil)
	extra := statement("NewWildcard", []string{"ec2:DeleteVolume"}, []string{arn(stack, "volume/*")}, managedBy(cfg))
	if _, err := NewAmiFunction(stack, &AmiFunctionProps{Name: "prune", Config: cfg, Root: repoRoot(t),
		Statements: append(pruneStatements(stack, cfg), extra), Wildcards: pruneWildcards(stack), Notifications: NewNotifications(stack, cfg)}); err != nil {
		t.Fatal(err)
	}
	awscdk.Aspects_Of(app).Add(cdknag.NewAwsSolutionsChecks(&cdknag.NagPackProps{Verbose: jsii.Bool(true)}), nil)
	errs := assertions.Annotations_FromStack(stack).FindError(jsii.String("*"), assertions.Match_StringLikeRegexp(jsii.String("AwsSolutions-IAM5")))
	var flagged []string
	for _, e := range *errs {
		flagged = append(flagged, fmt.Sprint(e.Entry.Data))
	}
	if len(flagged) != 1 || !strings.Contains(flagged[0], "volume/*") {
		t.Fatalf("want exactly the new volume wildcard flagged, got %v", flagged)
	}
}

// TestConfigSizeCountsResolvedKeyARN: a key the stack creates is a short
// token at synth and a full ARN at deploy; the budget counts the ARN.
func TestConfigSizeCountsResolvedKeyARN(t *testing.T) {
	requireNode(t)
	token := *awscdk.Fn_Ref(jsii.String("CopyKey"))
	for n := 1; n < 400; n++ {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("%012d", 300000000000+i)
		}
		idsJSON, _ := json.Marshal(ids)
		cfg, err := config.Parse([]byte(`{"deployment":"dr","recovery":{"sourceAccountIds":`+string(idsJSON)+`,"sourceDeployment":"prod","retention":{"last":3}}}`), "")
		if err != nil {
			t.Fatal(err)
		}
		cfg.Recovery.KMSKeyARN = token
		raw := len(config.EnvVar) + len(cfg.JSON())
		if raw <= maxConfigEnvBytes-60 {
			continue
		}
		if raw > maxConfigEnvBytes {
			t.Fatalf("no account count puts the document just under the budget (raw %d)", raw)
		}
		if err := checkConfigSize(cfg, "copy"); err == nil {
			t.Fatalf("%d bytes with a %d-byte token accepted; the resolved ARN would exceed the budget", raw, len(token))
		}
		return
	}
	t.Fatal("budget never reached")
}

// checkNotifications: CloudWatch alarms and EventBridge can deliver to the
// alarm topic. A topic policy replaces SNS's default policy, so it must
// allow cloudwatch.amazonaws.com (only for this account's alarms in this
// Region), and the topic's key must let CloudWatch and EventBridge use it;
// for EventBridge without aws:Source* conditions, which SNS does not
// support there. Scheduler writes to the dead-letter queue with its role
// and needs no key statement.
func checkNotifications(t *testing.T, tmpl map[string]any) {
	t.Helper()
	topics := resources(tmpl, "AWS::SNS::Topic")
	if len(topics) != 1 {
		t.Fatalf("%d topics", len(topics))
	}
	for topicID, topic := range topics {
		ref := "<" + topicID + ">"
		var alarmsPublish, eventsPublish bool
		for _, s := range statements(tmpl, "AWS::SNS::TopicPolicy") {
			p, _ := s.Principal.(map[string]any)
			if s.Effect != "Allow" || !hasAction(s, "sns:Publish") || !slices.Equal(s.Resources, []string{ref}) {
				continue
			}
			switch p["Service"] {
			case "cloudwatch.amazonaws.com":
				alarmsPublish = slices.Equal(cond(s, "StringEquals", "aws:SourceAccount"), []string{"<AWS::AccountId>"}) &&
					slices.Equal(cond(s, "ArnLike", "aws:SourceArn"), []string{"arn:<AWS::Partition>:cloudwatch:<AWS::Region>:<AWS::AccountId>:alarm:*"})
				if !alarmsPublish {
					t.Errorf("CloudWatch may publish without the account and alarm-ARN conditions: %+v", s)
				}
			case "events.amazonaws.com":
				eventsPublish = true
			}
		}
		if !alarmsPublish {
			t.Error("the topic policy does not let CloudWatch alarms publish: every alarm action fails")
		}
		if !eventsPublish {
			t.Error("the topic policy does not let EventBridge publish (failed-image rule)")
		}
		for id, a := range resources(tmpl, "AWS::CloudWatch::Alarm") {
			if actions := a["AlarmActions"].([]any); len(actions) != 1 || flatten(actions[0]) != ref {
				t.Errorf("alarm %s notifies %v, not the topic", id, a["AlarmActions"])
			}
		}
		keyRef := flatten(topic["KmsMasterKeyId"])
		keyID := strings.TrimSuffix(strings.TrimPrefix(keyRef, "<"), ".Arn>")
		uses := map[string]bool{}
		for _, s := range statements(tmpl, "AWS::KMS::Key") {
			if s.Policy != keyID || s.Effect != "Allow" {
				continue
			}
			p, _ := s.Principal.(map[string]any)
			svc, _ := p["Service"].(string)
			if svc == "" {
				continue
			}
			if !hasAction(s, "kms:Decrypt") || !hasAction(s, "kms:GenerateDataKey*") {
				t.Errorf("key statement %s for %s: %v", s.Sid, svc, s.Actions)
			}
			switch svc {
			case "cloudwatch.amazonaws.com":
				uses[svc] = slices.Equal(cond(s, "StringEquals", "aws:SourceAccount"), []string{"<AWS::AccountId>"})
			case "events.amazonaws.com":
				uses[svc] = true
				for op := range s.Condition {
					for k := range s.Condition[op].(map[string]any) {
						if strings.HasPrefix(strings.ToLower(k), "aws:source") {
							t.Errorf("EventBridge key statement %s has %s, which SNS does not support for EventBridge: every event would be dropped", s.Sid, k)
						}
					}
				}
			default:
				t.Errorf("key statement %s for %s, which does not use the key as a service principal", s.Sid, svc)
			}
		}
		if keyID == "" || !uses["cloudwatch.amazonaws.com"] || !uses["events.amazonaws.com"] {
			t.Errorf("the topic's key %q does not let CloudWatch (with aws:SourceAccount) and EventBridge use it: %v", keyRef, uses)
		}
	}
}

// TestAlarmsCanNotify: in every kind of stack the alarms reach the topic
// and the topic's key lets the publishing services use it.
func TestAlarmsCanNotify(t *testing.T) {
	for name, cfg := range map[string]string{"backup": testConfig, "sharing": sharingConfig, "recovery": recoveryConfig} {
		t.Run(name, func(t *testing.T) {
			_, tmpl := synthCached(t, cfg)
			checkNotifications(t, tmpl)
		})
	}
}
