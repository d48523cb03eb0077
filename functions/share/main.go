// Command share is the share Lambda function: "EC2 AMI State Change"
// events and a scheduled sweep share this deployment's backups.
package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/logging"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/share"
	"github.com/amibackup/amibackup/pkg/trigger"
)

func main() {
	log := logging.New(os.Stdout, slog.String("function", share.Function))
	cfg, err := config.FromEnv()
	if err == nil && cfg.Sharing == nil {
		err = errSharingMissing
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
	s := &share.Sharer{EC2: ec2.NewFromConfig(awsCfg), KMS: kms.NewFromConfig(awsCfg), Config: cfg, Metrics: emf.New(os.Stdout)}
	lambda.Start(func(ctx context.Context, raw json.RawMessage) (*runner.Summary, error) {
		s.Log = log
		if lc, ok := lambdacontext.FromContext(ctx); ok {
			s.Log = log.With("requestId", lc.AwsRequestID)
		}
		req, err := trigger.ParseShare(raw)
		if err != nil {
			s.Log.Error("rejected input; nothing was changed", "error", err.Error())
			return nil, err
		}
		if req.Ignored != "" {
			s.Log.Info("nothing to do", "reason", req.Ignored)
			return &runner.Summary{Function: share.Function, Deployment: cfg.Deployment}, nil
		}
		return s.Run(ctx, share.Request{ImageIDs: req.ImageIDs, Sweep: req.Sweep, Time: req.Time})
	})
}

type configError string

func (e configError) Error() string { return string(e) }

const errSharingMissing = configError("config: sharing: the share function needs the \"sharing\" section")
