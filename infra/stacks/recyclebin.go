package stacks

import (
	"github.com/aws/aws-cdk-go/awscdk/v2/awsrbin"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/tags"
)

// RecycleBin is the safety net under prune: Recycle Bin rules that keep
// the deployment's deregistered images and deleted snapshots (by their
// managed-by tag) for a while, so a pruned backup can still be restored.
type RecycleBin struct {
	Images, Snapshots awsrbin.CfnRule
}

// NewRecycleBin adds the two rules to scope (IDs RecycleBinImages and
// RecycleBinSnapshots, as before this type existed); nil when
// recycleBin.disabled.
func NewRecycleBin(scope constructs.Construct, cfg *config.Config) *RecycleBin {
	if cfg.RecycleBin.Disabled {
		return nil
	}
	rule := func(id, typ string, days int) awsrbin.CfnRule {
		return awsrbin.NewCfnRule(scope, jsii.String(id), &awsrbin.CfnRuleProps{
			Description:     jsii.String("amibackup " + cfg.Deployment + ": pruned backups can be restored for a while"),
			ResourceType:    jsii.String(typ),
			RetentionPeriod: &awsrbin.CfnRule_RetentionPeriodProperty{RetentionPeriodUnit: jsii.String("DAYS"), RetentionPeriodValue: jsii.Number(days)},
			ResourceTags:    &[]any{&awsrbin.CfnRule_ResourceTagProperty{ResourceTagKey: jsii.String(tags.ManagedBy), ResourceTagValue: jsii.String(cfg.Deployment)}},
		})
	}
	return &RecycleBin{
		Images:    rule("RecycleBinImages", "EC2_IMAGE", cfg.RecycleBin.ImageRetentionDays),
		Snapshots: rule("RecycleBinSnapshots", "EBS_SNAPSHOT", cfg.RecycleBin.SnapshotRetentionDays),
	}
}
