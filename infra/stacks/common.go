package stacks

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/tags"
)

// Tags of the stack, which CloudFormation puts on every taggable resource.
const (
	stackTagDeployment = tags.Prefix + "deployment"
	stackTagComponent  = tags.Prefix + "component"
)

// Common is what every amibackup stack has: the stack with the
// deployment's tags and termination protection, its notifications (alarm
// topic, dead-letter queue, their key) and its schedules.
type Common struct {
	awscdk.Stack
	Notifications *Notifications
	Schedules     *Schedules
}

// newCommon creates the stack and its common parts; description is the
// stack's unless sp has one.
func newCommon(scope constructs.Construct, id string, sp awscdk.StackProps, cfg *config.Config, description string) *Common {
	sp.TerminationProtection = jsii.Bool(cfg.TerminationProtectionEnabled())
	if sp.Description == nil {
		sp.Description = jsii.String(description)
	}
	stack := awscdk.NewStack(scope, jsii.String(id), &sp)
	awscdk.Tags_Of(stack).Add(jsii.String(stackTagDeployment), jsii.String(cfg.Deployment), nil)
	awscdk.Tags_Of(stack).Add(jsii.String(stackTagComponent), jsii.String("infrastructure"), nil)
	n := NewNotifications(stack, cfg)
	return &Common{Stack: stack, Notifications: n, Schedules: NewSchedules(stack, cfg, n)}
}
