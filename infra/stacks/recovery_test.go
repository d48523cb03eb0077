package stacks

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/tags"
)

const sharingConfig = `{"deployment":"prod","policies":[{"name":"nightly","selector":{"tagKey":"Backup"},
 "schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7}}],
 "sharing":{"accountIds":["222222222222"],"organizationArns":["arn:aws:organizations::111111111111:organization/o-abcdefghij"],"organizationalUnitArns":["arn:aws:organizations::111111111111:ou/o-abcdefghij/ou-ab12-cdefgh34"],"createKey":true}}`

const recoveryConfig = `{"deployment":"dr","recovery":{"sourceAccountIds":["111111111111"],"sourceDeployment":"prod",
 "sourceRegion":"eu-west-1","retention":{"daily":14}}}`

func nagErrors(t *testing.T, s awscdk.Stack) {
	t.Helper()
	errs := assertions.Annotations_FromStack(s).FindError(jsii.String("*"), assertions.Match_StringLikeRegexp(jsii.String("AwsSolutions-.*")))
	for _, e := range *errs {
		t.Errorf("cdk-nag: %s %v", *e.Id, e.Entry.Data)
	}
}

func TestSharingOnBackupStack(t *testing.T) {
	stack, tmpl := synthCached(t, sharingConfig)
	template := assertions.Template_FromJSON(&tmpl, nil)
	template.ResourceCountIs(jsii.String("AWS::Lambda::Function"), jsii.Number(3))
	template.HasResourceProperties(jsii.String("AWS::Events::Rule"), map[string]any{
		"EventPattern": map[string]any{"source": []string{"aws.ec2"}, "detail-type": []string{"EC2 AMI State Change"}, "detail": map[string]any{"State": []string{"available"}}},
	})
	template.HasResourceProperties(jsii.String("AWS::Scheduler::Schedule"), map[string]any{
		"Name": "share-sweep", "ScheduleExpression": "rate(1 hour)",
		"Target": assertions.Match_ObjectLike(&map[string]any{"Input": SweepInput}),
	})
	// The shared key lets the target account use it for copies.
	template.HasResourceProperties(jsii.String("AWS::KMS::Key"), map[string]any{
		"EnableKeyRotation": true,
		"KeyPolicy": assertions.Match_ObjectLike(&map[string]any{"Statement": assertions.Match_ArrayWith(&[]any{
			assertions.Match_ObjectLike(&map[string]any{"Sid": "TargetAccountGrants0", "Action": "kms:CreateGrant",
				"Condition": map[string]any{"Bool": map[string]any{"kms:GrantIsForAWSResource": "true"}}}),
		})}),
	})
	template.HasOutput(jsii.String("SharedBackupKeyArn"), map[string]any{})
	// Organizations and OUs reach the key through Principal * narrowed by
	// the principal's organization or OU path.
	keySts := statements(tmpl, "AWS::KMS::Key")
	for sid, want := range map[string][]string{
		"TargetOrganizationsUse": {"StringEquals", "aws:PrincipalOrgID", "o-abcdefghij"}, "TargetOrganizationsGrants": {"StringEquals", "aws:PrincipalOrgID", "o-abcdefghij"},
		"TargetOUsUse": {"ForAnyValue:StringLike", "aws:PrincipalOrgPaths", "o-abcdefghij/*/ou-ab12-cdefgh34/*"}, "TargetOUsGrants": {"ForAnyValue:StringLike", "aws:PrincipalOrgPaths", "o-abcdefghij/*/ou-ab12-cdefgh34/*"},
	} {
		s := bySid(t, keySts, sid)[0]
		if p, _ := s.Principal.(map[string]any); p["AWS"] != "*" || !slices.Equal(cond(s, want[0], want[1]), want[2:]) {
			t.Errorf("%s: principal %v, condition %v", sid, s.Principal, s.Condition)
		}
	}
	for _, s := range keySts {
		if p, _ := s.Principal.(map[string]any); p["AWS"] == "*" && s.Condition == nil {
			t.Errorf("key statement %s open to every principal", s.Sid)
		}
	}
	checkIAM(t, tmpl, "prod", map[string][]string{"Backup": nil})
	checkShareRole(t, tmpl, "prod", []string{"222222222222"})
	checkGrants(t, tmpl)
	checkSchedulerInvokes(t, tmpl)
	checkDashboard(t, tmpl, "prod", "ImagesCreated")
	for _, fn := range resources(tmpl, "AWS::Lambda::Function") {
		env := fn["Environment"].(map[string]any)["Variables"].(map[string]any)
		if c, err := config.Parse([]byte(env[config.EnvVar].(string)), ""); err != nil || c.Sharing == nil {
			t.Errorf("function config: %v", err)
		}
	}
	nagErrors(t, stack)
}

func TestRecoveryStack(t *testing.T) {
	stack, tmpl := synthCached(t, recoveryConfig)
	template := assertions.Template_FromJSON(&tmpl, nil)
	template.ResourceCountIs(jsii.String("AWS::Lambda::Function"), jsii.Number(2))
	template.HasResourceProperties(jsii.String("AWS::Scheduler::Schedule"), map[string]any{
		"Name": "copy", "Target": assertions.Match_ObjectLike(&map[string]any{"Input": SweepInput}),
	})
	template.HasResourceProperties(jsii.String("AWS::Scheduler::Schedule"), map[string]any{"Name": "prune"})
	template.ResourceCountIs(jsii.String("AWS::Rbin::Rule"), jsii.Number(2))
	template.HasResourceProperties(jsii.String("AWS::Rbin::Rule"), map[string]any{
		"ResourceType": "EC2_IMAGE", "ResourceTags": []any{map[string]any{"ResourceTagKey": tags.ManagedBy, "ResourceTagValue": "dr"}},
	})
	// Copy and prune errors, dead letters, copy failures, prune blocked and prune failures.
	template.ResourceCountIs(jsii.String("AWS::CloudWatch::Alarm"), jsii.Number(6))
	for _, m := range []string{"CopyFailures", "PruneBlocked", "PruneFailures"} {
		template.HasResourceProperties(jsii.String("AWS::CloudWatch::Alarm"), map[string]any{"MetricName": m, "Namespace": "amibackup",
			"AlarmActions": assertions.Match_AnyValue()})
	}
	// A failed copy is announced like a failed backup.
	template.HasResourceProperties(jsii.String("AWS::Events::Rule"), map[string]any{
		"EventPattern": map[string]any{"source": []string{"aws.ec2"}, "detail-type": []string{"EC2 AMI State Change"}, "detail": map[string]any{"State": []string{"failed"}}},
		"Targets":      assertions.Match_ArrayWith(&[]any{assertions.Match_ObjectLike(&map[string]any{"InputTransformer": assertions.Match_AnyValue()})}),
	})
	checkDashboard(t, tmpl, "dr", "CopiesStarted", "CopiesWaiting", "CopyFailures", "ImagesPruned")
	checkSchedulerInvokes(t, tmpl)
	checkStackTags(t, tmpl, "dr")
	checkCopyRole(t, tmpl, "dr", "eu-west-1", []string{"111111111111"})
	checkGrants(t, tmpl)
	// The copy key is created and handed to the functions.
	template.HasResourceProperties(jsii.String("AWS::KMS::Alias"), map[string]any{"AliasName": "alias/amibackup-dr-copies"})
	found := false
	for _, fn := range resources(tmpl, "AWS::Lambda::Function") {
		env, _ := jsonString(fn["Environment"])
		if strings.Contains(env, "kmsKeyArn") && strings.Contains(env, "CopyKey") {
			found = true
		}
	}
	if !found {
		t.Error("the created copy key is not in the functions' configuration")
	}
	checkIAM(t, tmpl, "dr", nil)
	nagErrors(t, stack)
}

func jsonString(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}
