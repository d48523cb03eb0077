package stacks

import (
	"slices"
	"strings"
	"testing"
)

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
