package simtest

import (
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/ec2sim"
)

// AutoScaling returns a real Auto Scaling client for the account and
// Region, configured like Client.
func (e *Env) AutoScaling(account, region string) *autoscaling.Client {
	account, region = orDefaults(account, region)
	return autoscaling.New(autoscaling.Options{
		Region:       region,
		BaseEndpoint: aws.String(e.URL),
		Credentials:  credentials.NewStaticCredentialsProvider(account, "secret", ""),
		Retryer:      awsclient.NewRetryer(),
		HTTPClient:   HTTPClient(),
	})
}

// ELBv2 returns a real Elastic Load Balancing v2 client for the account and
// Region, configured like Client.
func (e *Env) ELBv2(account, region string) *elasticloadbalancingv2.Client {
	account, region = orDefaults(account, region)
	return elasticloadbalancingv2.New(elasticloadbalancingv2.Options{
		Region:       region,
		BaseEndpoint: aws.String(e.URL),
		Credentials:  credentials.NewStaticCredentialsProvider(account, "secret", ""),
		Retryer:      awsclient.NewRetryer(),
		HTTPClient:   HTTPClient(),
	})
}

func orDefaults(account, region string) (string, string) {
	if account == "" {
		account = ec2sim.DefaultAccount
	}
	if region == "" {
		region = ec2sim.DefaultRegion
	}
	return account, region
}
