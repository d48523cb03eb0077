package stacks

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/tags"
)

const sharingConfig = `{"deployment":"prod","policies":[{"name":"nightly","selector":{"tagKey":"Backup"},
 "schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7}}],
 "sharing":{"accountIds":["222222222222"],"organizationalUnitArns":["arn:aws:organizations::111111111111:ou/o-abcdefghij/ou-ab12-cdefgh34"],"createKey":true}}`

const recoveryConfig = `{"deployment":"dr","recovery":{"sourceAccountIds":["111111111111"],"sourceDeployment":"prod",
 "sourceRegion":"eu-west-1","retention":{"daily":14}}}`

func nagErrors(t *testing.T, s *Stack) {
	t.Helper()
	errs := assertions.Annotations_FromStack(s.Stack).FindError(jsii.String("*"), assertions.Match_StringLikeRegexp(jsii.String("AwsSolutions-.*")))
	for _, e := range *errs {
		t.Errorf("cdk-nag: %s %v", *e.Id, e.Entry.Data)
	}
}

func TestSharingOnBackupStack(t *testing.T) {
	stack, tmpl := synth(t, sharingConfig)
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
	checkIAM(t, tmpl, "prod", map[string][]string{"Backup": nil})
	for _, fn := range resources(tmpl, "AWS::Lambda::Function") {
		env := fn["Environment"].(map[string]any)["Variables"].(map[string]any)
		if c, err := config.Parse([]byte(env[config.EnvVar].(string)), ""); err != nil || c.Sharing == nil {
			t.Errorf("function config: %v", err)
		}
	}
	nagErrors(t, stack)
}

func TestRecoveryStack(t *testing.T) {
	stack, tmpl := synth(t, recoveryConfig)
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
	template.ResourceCountIs(jsii.String("AWS::CloudWatch::Alarm"), jsii.Number(5))
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
	for _, p := range resources(tmpl, "AWS::IAM::Policy") {
		s, _ := jsonString(p)
		if strings.Contains(s, "ec2:CopyImage") && !strings.Contains(s, "aws:RequestTag/"+tags.ManagedBy) {
			t.Errorf("CopyImage without a request-tag condition: %s", s)
		}
		if strings.Contains(s, "kms:Decrypt") && strings.Contains(s, "UseKeysThroughEC2") && !strings.Contains(s, "kms:ViaService") {
			t.Errorf("KMS use not limited to EC2: %s", s)
		}
	}
	nagErrors(t, stack)
}

func jsonString(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}
