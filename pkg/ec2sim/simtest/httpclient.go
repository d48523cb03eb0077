package simtest

import (
	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/amibackup/amibackup/pkg/awsclient"
)

// HTTPClient is the production HTTP client (awsclient.HTTPClient, with its
// workaround for aws-sdk-go-v2 issue 2737), so tests talk to the emulator
// exactly as the functions do.
func HTTPClient() aws.HTTPClient { return awsclient.HTTPClient() }
