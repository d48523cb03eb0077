package simtest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/amibackup/amibackup/pkg/awsclient"
)

// HTTPClient is the production HTTP client (awsclient.HTTPClient) with a
// workaround for a client-side race in aws-sdk-go-v2 (issue 2737, "use of
// closed network connection") that the emulator's zero-latency loopback
// answers trigger on about one call in five (see awsclient.HTTPClient for the
// measurements; EC2's latency keeps production clear of it, and the SDK
// retries it). Tests need it because they run with retries off or count
// calls exactly (TestLargeResponsesNoDroppedConnections fails without it).
//
// The race: smithy-go's ClientHandler closes the request body as soon as
// http.Client.Do returns, i.e. when the response headers have arrived.
// net/http's writeLoop may not have finished with the body by then: after
// copying Content-Length bytes it reads once more to check for excess data.
// The SDK wraps the body so that this read, after Close, returns io.EOF from
// WriteTo, which io.Copy reports as an error; writeLoop then fails the write
// and closes the connection while readLoop is still reading the response
// body. The workaround detaches the body: it is read into memory and
// replaced by a reader the SDK never sees, so closing the SDK's wrapper
// cannot affect the transport.
//
// The wrapper is not a *BuildableClient, so the SDK cannot apply
// AWS_CA_BUNDLE to it: use it for ec2.Options.HTTPClient, not with
// config.LoadDefaultConfig.
func HTTPClient() aws.HTTPClient { return detachedBodyClient{awsclient.HTTPClient()} }

type detachedBodyClient struct{ next aws.HTTPClient }

func (c detachedBodyClient) Do(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, fmt.Errorf("read request body: %w", err)
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	return c.next.Do(req)
}
