// Command prune is the prune Lambda function: it parses the trigger and
// hands it to pkg/prune. Configuration and the EC2 client are created once
// per cold start.
package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/logging"
	"github.com/amibackup/amibackup/pkg/prune"
	"github.com/amibackup/amibackup/pkg/trigger"
)

func main() {
	log := logging.New(os.Stdout, slog.String("function", prune.Function))
	cfg, err := config.FromEnv()
	if err != nil {
		log.Error("invalid configuration; fix AMIBACKUP_CONFIG (the stack sets it from cdk.json / -c amibackup:config)", "error", err.Error())
		os.Exit(1)
	}
	client, err := awsclient.NewEC2(context.Background())
	if err != nil {
		log.Error("create EC2 client", "error", err.Error())
		os.Exit(1)
	}
	metrics := emf.New(os.Stdout)
	lambda.Start(func(ctx context.Context, raw json.RawMessage) (*prune.Summary, error) {
		l := log
		if lc, ok := lambdacontext.FromContext(ctx); ok {
			l = log.With("requestId", lc.AwsRequestID)
		}
		req, err := trigger.ParsePrune(raw, cfg)
		if err != nil {
			l.Error("rejected input; nothing was deleted", "error", err.Error())
			return nil, err
		}
		p := &prune.Pruner{EC2: client, Config: cfg, Log: l, Metrics: metrics}
		return p.Run(ctx, req)
	})
}
