package simtest

import (
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sfn"

	"github.com/amibackup/amibackup/pkg/awsclient"
)

// SFN returns a real Step Functions client for the account and Region,
// configured like Client (the emulator serves Step Functions' JSON
// protocol on the same endpoint: ec2sim/sfn.go).
func (e *Env) SFN(account, region string) *sfn.Client {
	account, region = orDefaults(account, region)
	return sfn.New(sfn.Options{
		Region:       region,
		BaseEndpoint: aws.String(e.URL),
		Credentials:  credentials.NewStaticCredentialsProvider(account, "secret", ""),
		Retryer:      awsclient.NewRetryer(),
		HTTPClient:   HTTPClient(),
	})
}
