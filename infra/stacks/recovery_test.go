package stacks

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/tags"
)

const recoveryConfig = `{"deployment":"dr","recovery":{"sourceAccountIds":["111111111111"],"sourceDeployment":"prod",
 "sourceRegion":"eu-west-1","retention":{"daily":14}}}`

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
