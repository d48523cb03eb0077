// Command copy is the recovery account's copy Lambda function: on its
// schedule it copies the backups shared with this account.
package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/drcopy"
	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/logging"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/trigger"
)

func main() {
	log := logging.New(os.Stdout, slog.String("function", drcopy.Function))
	cfg, err := config.FromEnv()
	if err == nil && cfg.Recovery == nil {
		log.Error("invalid configuration: the copy function needs the \"recovery\" section")
		os.Exit(1)
	}
	if err != nil {
		log.Error("invalid configuration; fix AMIBACKUP_CONFIG", "error", err.Error())
		os.Exit(1)
	}
	awsCfg, err := awsclient.LoadConfig(context.Background())
	if err != nil {
		log.Error("load AWS configuration", "error", err.Error())
		os.Exit(1)
	}
	c := &drcopy.Copier{EC2: ec2.NewFromConfig(awsCfg), Config: cfg, Region: awsCfg.Region, Metrics: emf.New(os.Stdout)}
	lambda.Start(func(ctx context.Context, raw json.RawMessage) (*runner.Summary, error) {
		c.Log = log
		if lc, ok := lambdacontext.FromContext(ctx); ok {
			c.Log = log.With("requestId", lc.AwsRequestID)
		}
		req, err := trigger.ParseShare(raw)
		if err != nil || !req.Sweep {
			if err == nil {
				err = errNotSweep
			}
			c.Log.Error("rejected input; nothing was copied", "error", err.Error())
			return nil, err
		}
		return c.Run(ctx, req.Time)
	})
}

type inputError string

func (e inputError) Error() string { return string(e) }

const errNotSweep = inputError("input: the copy function takes only its Scheduler input {\"sweep\": true, \"time\": \"<aws.scheduler.scheduled-time>\"}")
