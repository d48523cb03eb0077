// Command copy is the recovery account's copy Lambda function: on its
// schedule it copies the backups shared with this account.
package main

import (
	"context"
	"errors"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/amibackup/amibackup/pkg/coldstart"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/drcopy"
	"github.com/amibackup/amibackup/pkg/invoke"
	"github.com/amibackup/amibackup/pkg/runner"
)

func main() {
	env := coldstart.Must(coldstart.Init(context.Background(), drcopy.Function, func(c *config.Config) error {
		if c.Recovery == nil {
			return errors.New("recovery: the copy function needs the \"recovery\" section")
		}
		return nil
	}, lambdacontext.NewLogHandler()))
	client := ec2.NewFromConfig(env.AWS)
	// A lambda.Handler gets the payload as received (see pkg/invoke).
	lambda.Start(lambda.Handler(invoke.Func[*runner.Summary](func(ctx context.Context, raw []byte) (*runner.Summary, error) {
		c := &drcopy.Copier{EC2: client, Config: env.Config, Region: env.AWS.Region, Job: runner.Job{Log: env.Logger(ctx), Metrics: env.Metrics}}
		return c.Handle(ctx, raw)
	})))
}
