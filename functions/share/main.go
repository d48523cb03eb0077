// Command share is the share Lambda function: "EC2 AMI State Change"
// events and a scheduled sweep share this deployment's backups.
package main

import (
	"context"
	"errors"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/amibackup/amibackup/pkg/coldstart"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/invoke"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/share"
)

func main() {
	env := coldstart.Must(coldstart.Init(context.Background(), share.Function, func(c *config.Config) error {
		if c.Sharing == nil {
			return errors.New("sharing: the share function needs the \"sharing\" section")
		}
		return nil
	}, lambdacontext.NewLogHandler()))
	ec2Client, kmsClient := ec2.NewFromConfig(env.AWS), kms.NewFromConfig(env.AWS)
	// A lambda.Handler gets the payload as received (see pkg/invoke).
	lambda.Start(lambda.Handler(invoke.Func[*runner.Summary](func(ctx context.Context, raw []byte) (*runner.Summary, error) {
		s := &share.Sharer{EC2: ec2Client, KMS: kmsClient, Config: env.Config, Job: runner.Job{Log: env.Logger(ctx), Metrics: env.Metrics}}
		return s.Handle(ctx, raw)
	})))
}
