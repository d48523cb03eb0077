package awsclient

import (
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
)

// AttemptTimeout bounds one HTTP attempt of an SDK call: connecting, sending,
// waiting for the answer and reading its body. A hung attempt fails with a
// timeout, which the retryer treats as a retryable connection error, so a
// call that EC2 never answers costs this much per attempt instead of the
// whole invocation. The callers still bound whole listings with
// runner.WorkContext.
//
// EC2 Query calls normally answer in well under a second; the slowest we
// make, a DescribeImages or DescribeInstances page of 1,000 items, takes a
// few seconds. 30 s leaves a wide margin above that, and the SDK itself sets
// no limit for EC2 (its opt-in read timeout, AWS_ENABLE_DEFAULT_SOCKET_TIMEOUT_2026,
// would be 15 minutes of silence).
const AttemptTimeout = 30 * time.Second

// HTTPClient returns the HTTP client every amibackup SDK client uses: the
// SDK's own BuildableClient, so the standard environment keeps working
// (AWS_CA_BUNDLE adds its roots through WithTransportOptions, HTTPS_PROXY and
// NO_PROXY are read by its transport), with AttemptTimeout per attempt.
//
// It used to wrap the client to work around aws-sdk-go-v2's "use of closed
// network connection" race (issue 2737), and that wrapper made the SDK reject
// AWS_CA_BUNDLE. Measured with aws-sdk-go-v2 v1.48.0 (2,000 DescribeInstances
// calls of 100 instances each, ec2sim over loopback, 2 vCPU):
//
//	retries off, plain client:                          405 and 438 failed calls (HTTP and TLS alike)
//	retries off, body-detaching wrapper:                0 and 0
//	retries off, plain client, ec2sim latency 1 ms:     7 failed
//	retries off, plain client, ec2sim latency 10 ms:    0 failed
//	SDK standard retryer (3 attempts), plain client:    2-7 failed, about 450 retries
//	amibackup's retryer (12 attempts), plain client:    0 and 0 failed, 383 and 514 retries
//
// The race needs an answer faster than the client's own write goroutine
// (loopback with no latency); EC2's latency is far above 10 ms, and since the
// fix for issue 2737 (PR 2949) the SDK retries the error anyway. So
// production uses the plain client; the workaround lives on only in
// simtest.HTTPClient, for tests that count calls exactly with retries off.
func HTTPClient() *awshttp.BuildableClient { return NewHTTPClient(AttemptTimeout) }

// NewHTTPClient is HTTPClient with another attempt timeout (tests).
func NewHTTPClient(attemptTimeout time.Duration) *awshttp.BuildableClient {
	return awshttp.NewBuildableClient().WithTimeout(attemptTimeout)
}
