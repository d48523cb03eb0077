package stacks

import (
	"slices"
	"strings"
	"testing"
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
		if strings.HasPrefix(s.Policy, "WorkflowPolicy") && s.Sid == "InvokeRollout" {
			continue // the state machine's role (TestWavesGetWorkflow)
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

// checkDeleteTags: every statement allowing ec2:DeleteTags names the keys
// it may delete and requires the request to name keys: a DeleteTags
// without tags deletes every user tag of the resource (EC2 API reference,
// DeleteTags), and ForAllValues holds for an empty set. Returns how many
// statements it checked.
func checkDeleteTags(t *testing.T, tmpl map[string]any) int {
	t.Helper()
	n := 0
	for _, s := range statements(tmpl, "AWS::IAM::Policy") {
		if s.Effect != "Allow" || !hasAction(s, "ec2:DeleteTags") {
			continue
		}
		n++
		if len(cond(s, "ForAllValues:StringEquals", "aws:TagKeys")) == 0 {
			t.Errorf("%s %s: ec2:DeleteTags without a list of tag keys: %v", s.Policy, s.Sid, s.Condition)
		}
		if !slices.Equal(cond(s, "Null", "aws:TagKeys"), []string{"false"}) {
			t.Errorf("%s %s: ec2:DeleteTags without Null aws:TagKeys=false (a request naming no tag deletes them all): %v", s.Policy, s.Sid, s.Condition)
		}
	}
	return n
}
