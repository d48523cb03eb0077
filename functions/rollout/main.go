// Command rollout is the function of the reboot-wave workflow (issue 13):
// the Step Functions state machine calls it with one action at a time
// (pkg/rollout). Configuration and clients are created once per cold start.
package main

import (
	"context"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/sfn"

	"github.com/amibackup/amibackup/pkg/coldstart"
	"github.com/amibackup/amibackup/pkg/invoke"
	"github.com/amibackup/amibackup/pkg/rollout"
	"github.com/amibackup/amibackup/pkg/runner"
)

func main() {
	env := coldstart.Must(coldstart.Init(context.Background(), rollout.Function, nil, lambdacontext.NewLogHandler()))
	ec2c := ec2.NewFromConfig(env.AWS)
	asg := autoscaling.NewFromConfig(env.AWS)
	elb := elasticloadbalancingv2.NewFromConfig(env.AWS)
	states := sfn.NewFromConfig(env.AWS)
	// A lambda.Handler gets the payload as received (see pkg/invoke).
	lambda.Start(lambda.Handler(invoke.Func[any](func(ctx context.Context, raw []byte) (any, error) {
		log := env.Logger(ctx)
		r := &rollout.Roller{EC2: ec2c, AutoScaling: asg, ELB: elb, StepFunctions: states, Config: env.Config, Job: runner.Job{Log: log, Metrics: env.Metrics}}
		return r.Handle(ctx, raw)
	})))
}
