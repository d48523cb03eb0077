// Command backup is the backup Lambda function: it parses the trigger and
// hands it to pkg/backup. Configuration and the EC2 client are created once
// per cold start.
package main

import (
	"context"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sfn"

	"github.com/amibackup/amibackup/pkg/backup"
	"github.com/amibackup/amibackup/pkg/coldstart"
	"github.com/amibackup/amibackup/pkg/invoke"
	"github.com/amibackup/amibackup/pkg/runner"
)

func main() {
	env := coldstart.Must(coldstart.Init(context.Background(), backup.Function, nil, lambdacontext.NewLogHandler()))
	client := ec2.NewFromConfig(env.AWS)
	// Policies that reboot in waves start the workflow (pkg/backup handoff.go).
	workflow, workflowARN := sfn.NewFromConfig(env.AWS), os.Getenv(backup.WorkflowEnvVar)
	// A lambda.Handler gets the payload as received (see pkg/invoke).
	lambda.Start(lambda.Handler(invoke.Func[*runner.Summary](func(ctx context.Context, raw []byte) (*runner.Summary, error) {
		log := env.Logger(ctx)
		b := &backup.Backuper{EC2: client, Config: env.Config, Job: runner.Job{Log: log, Metrics: env.Metrics},
			Workflow: workflow, WorkflowARN: workflowARN}
		return b.Handle(ctx, raw)
	})))
}
