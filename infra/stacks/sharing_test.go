package stacks

import (
	"slices"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/tags"
)

const sharingConfig = `{"deployment":"prod","policies":[{"name":"nightly","selector":{"tagKey":"Backup"},
 "schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7}}],
 "sharing":{"accountIds":["222222222222"],"organizationArns":["arn:aws:organizations::111111111111:organization/o-abcdefghij"],"organizationalUnitArns":["arn:aws:organizations::111111111111:ou/o-abcdefghij/ou-ab12-cdefgh34"],"createKey":true}}`

func TestSharingOnBackupStack(t *testing.T) {
	stack, tmpl := synthCached(t, sharingConfig)
	template := assertions.Template_FromJSON(&tmpl, nil)
	// Backup, prune, share and rollout (the policy reboots in waves by default).
	template.ResourceCountIs(jsii.String("AWS::Lambda::Function"), jsii.Number(4))
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
