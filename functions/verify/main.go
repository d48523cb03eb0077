// Command verify is the function of the restore-verification workflow
// (issue 14): the Step Functions state machine calls it with one action at
// a time (pkg/verify). Configuration, network and client are created once
// per cold start.
package main

import (
	"context"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/amibackup/amibackup/pkg/coldstart"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/invoke"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/verify"
)

func main() {
	network, netErr := verify.NetworkFromEnv(os.Getenv)
	env := coldstart.Must(coldstart.Init(context.Background(), verify.Function, func(c *config.Config) error {
		if netErr != nil {
			return netErr
		}
		return network.Require(c)
	}, lambdacontext.NewLogHandler()))
	client := ec2.NewFromConfig(env.AWS)
	// A lambda.Handler gets the payload as received (see pkg/invoke).
	lambda.Start(lambda.Handler(invoke.Func[any](func(ctx context.Context, raw []byte) (any, error) {
		log := env.Logger(ctx)
		v := &verify.Verifier{EC2: client, Config: env.Config, Network: network, Job: runner.Job{Log: log, Metrics: env.Metrics}}
		return v.Handle(ctx, raw)
	})))
}
