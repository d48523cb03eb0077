package stacks

import (
	"fmt"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatchactions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awseventstargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssns"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssnssubscriptions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssqs"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/metrics"
	"github.com/amibackup/amibackup/pkg/trigger"
)

// Notifications are where a stack's problems go: the alarm topic (with
// the optional e-mail subscription), the dead-letter queue of every
// schedule and rule, the key encrypting both, and the alarms. Its
// resources are created in the scope given (the stack), with the IDs they
// had before this type existed, so no logical ID changed.
type Notifications struct {
	scope       constructs.Construct
	Key         awskms.Key
	Topic       awssns.Topic
	DeadLetters awssqs.Queue
	// DeadLetterAlarm fires when a message waits in DeadLetters.
	DeadLetterAlarm awscloudwatch.Alarm
}

// NewNotifications adds the key, topic, dead-letter queue and its alarm.
func NewNotifications(scope constructs.Construct, cfg *config.Config) *Notifications {
	stack := awscdk.Stack_Of(scope)
	n := &Notifications{scope: scope}
	n.Key = awskms.NewKey(scope, jsii.String("NotificationKey"), &awskms.KeyProps{
		Description:       jsii.String("amibackup " + cfg.Deployment + ": encrypts the alarm topic and dead-letter queue"),
		EnableKeyRotation: jsii.Bool(true),
	})
	// The services that write to the encrypted topic and queue as service
	// principals need the key ("Enable compatibility between event sources
	// from AWS services and encrypted topics",
	// https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services):
	// CloudWatch alarms publishing to the topic, and EventBridge rules
	// publishing to it (failed-image rule) or sending to the dead-letter
	// queue. SNS does not support aws:SourceAccount/aws:SourceArn in the key
	// policy for EventBridge, so that statement has no condition (with one,
	// every event would be dropped); the queue policy limits EventBridge to
	// this stack's rules (aws:SourceArn), the topic policy (CDK's grant for
	// the rule target) lets EventBridge publish. Scheduler writes to the
	// dead-letter queue with its own role (SchedulerPolicy), not as a
	// service principal, so it has no key statement.
	n.Key.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("CloudWatchAlarmsUseKey"),
		Principals: &[]awsiam.IPrincipal{awsiam.NewServicePrincipal(jsii.String("cloudwatch.amazonaws.com"), nil)},
		Actions:    jsii.Strings("kms:Decrypt", "kms:GenerateDataKey*"),
		Resources:  jsii.Strings("*"),
		Conditions: &map[string]any{"StringEquals": map[string]any{"aws:SourceAccount": stack.Account()}},
	}), nil)
	n.Key.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("EventBridgeUsesKey"),
		Principals: &[]awsiam.IPrincipal{awsiam.NewServicePrincipal(jsii.String("events.amazonaws.com"), nil)},
		Actions:    jsii.Strings("kms:Decrypt", "kms:GenerateDataKey*"),
		Resources:  jsii.Strings("*"),
	}), nil)
	n.Topic = awssns.NewTopic(scope, jsii.String("Alarms"), &awssns.TopicProps{
		DisplayName: jsii.String("amibackup " + cfg.Deployment + " alarms"),
		MasterKey:   n.Key,
		EnforceSSL:  jsii.Bool(true),
	})
	// A topic policy replaces SNS's default policy, and CDK creates one
	// (EnforceSSL, the EventBridge target), so CloudWatch alarms may publish
	// only if it says so; otherwise every alarm action fails with "not
	// authorized to perform: SNS:Publish"
	// (https://repost.aws/knowledge-center/cloudwatch-receive-sns-for-alarm-trigger).
	// Only alarms of this account and Region.
	n.Topic.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("CloudWatchAlarmsPublish"),
		Principals: &[]awsiam.IPrincipal{awsiam.NewServicePrincipal(jsii.String("cloudwatch.amazonaws.com"), nil)},
		Actions:    jsii.Strings("sns:Publish"),
		Resources:  jsii.Strings(*n.Topic.TopicArn()),
		Conditions: &map[string]any{
			"StringEquals": map[string]any{"aws:SourceAccount": stack.Account()},
			"ArnLike":      map[string]any{"aws:SourceArn": alarmARNs(stack)},
		},
	}))
	if cfg.Alarms.Email != "" {
		n.Topic.AddSubscription(awssnssubscriptions.NewEmailSubscription(jsii.String(cfg.Alarms.Email), nil))
	}
	n.DeadLetters = awssqs.NewQueue(scope, jsii.String("DeadLetterQueue"), &awssqs.QueueProps{
		Encryption:          awssqs.QueueEncryption_KMS,
		EncryptionMasterKey: n.Key,
		EnforceSSL:          jsii.Bool(true),
		RetentionPeriod:     awscdk.Duration_Days(jsii.Number(14)),
	})
	cdknag.NagSuppressions_AddResourceSuppressions(n.DeadLetters, &[]*cdknag.NagPackSuppression{{
		Id:     jsii.String("AwsSolutions-SQS3"),
		Reason: jsii.String("This queue is the dead-letter queue of the schedules and rules; a dead-letter queue needs no dead-letter queue of its own."),
	}}, jsii.Bool(false))
	n.DeadLetterAlarm = n.AlarmOnAny("DeadLetterAlarm", "amibackup: a schedule or rule could not invoke a function; messages wait in the dead-letter queue",
		n.DeadLetters.MetricApproximateNumberOfMessagesVisible(&awscloudwatch.MetricOptions{Period: awscdk.Duration_Minutes(jsii.Number(5)), Statistic: jsii.String("Maximum")}))
	return n
}

// alarmARNs matches every CloudWatch alarm of the stack's account and Region.
func alarmARNs(stack awscdk.Stack) string {
	return fmt.Sprintf("arn:%s:cloudwatch:%s:%s:alarm:*", *stack.Partition(), *stack.Region(), *stack.Account())
}

// Alarm adds an alarm on m (one evaluation period) notifying the topic.
func (n *Notifications) Alarm(id, description string, m awscloudwatch.IMetric, threshold float64, op awscloudwatch.ComparisonOperator, missing awscloudwatch.TreatMissingData) awscloudwatch.Alarm {
	a := awscloudwatch.NewAlarm(n.scope, jsii.String(id), &awscloudwatch.AlarmProps{
		AlarmDescription:   jsii.String(description),
		Metric:             m,
		Threshold:          jsii.Number(threshold),
		EvaluationPeriods:  jsii.Number(1),
		ComparisonOperator: op,
		TreatMissingData:   missing,
	})
	a.AddAlarmAction(awscloudwatchactions.NewSnsAction(n.Topic))
	return a
}

// AlarmOnAny alarms when the metric reaches 1 in a period; no data means
// nothing ran, which is not an alarm.
func (n *Notifications) AlarmOnAny(id, description string, m awscloudwatch.IMetric) awscloudwatch.Alarm {
	return n.Alarm(id, description, m, 1, awscloudwatch.ComparisonOperator_GREATER_THAN_OR_EQUAL_TO_THRESHOLD, awscloudwatch.TreatMissingData_NOT_BREACHING)
}

// FailedImageRule notifies about failed images. The event carries no
// tags, so it fires for every failed AMI in the account; the functions'
// failure metrics cover what they see themselves. next says what happens
// to a failed image of this deployment besides prune deregistering it.
func (n *Notifications) FailedImageRule(cfg *config.Config, next string) awsevents.Rule {
	rule := awsevents.NewRule(n.scope, jsii.String("FailedImageRule"), &awsevents.RuleProps{
		Description: jsii.String("amibackup: an AMI in this account and Region failed"),
		EventPattern: &awsevents.EventPattern{
			Source:     jsii.Strings("aws.ec2"),
			DetailType: jsii.Strings(trigger.AMIStateChange),
			Detail:     &map[string]any{"State": []string{"failed"}},
		},
	})
	rule.AddTarget(awseventstargets.NewSnsTopic(n.Topic, &awseventstargets.SnsTopicProps{
		Message: awsevents.RuleTargetInput_FromText(jsii.String(fmt.Sprintf(
			"amibackup (%s): AMI %s failed: %s. If it is an amibackup image, the next prune run deregisters it; %s.",
			cfg.Deployment, *awsevents.EventField_FromPath(jsii.String("$.detail.ImageId")), *awsevents.EventField_FromPath(jsii.String("$.detail.ErrorMessage")), next))),
		DeadLetterQueue: n.DeadLetters,
	}))
	return rule
}

// metric is one of the functions' metrics (pkg/metrics) for one value of
// its dimension: a policy name, metrics.AllPolicies or config.CopyPolicy.
func metric(name, dimension, stat string, period awscdk.Duration) awscloudwatch.Metric {
	return awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
		Namespace:     jsii.String(emf.Namespace),
		MetricName:    jsii.String(name),
		DimensionsMap: &map[string]*string{metrics.Dimension: jsii.String(dimension)},
		Statistic:     jsii.String(stat),
		Period:        period,
	})
}

// hourly and daily are the alarms' and the dashboard's periods.
func hourly() awscdk.Duration { return awscdk.Duration_Hours(jsii.Number(1)) }
func daily() awscdk.Duration  { return awscdk.Duration_Days(jsii.Number(1)) }
