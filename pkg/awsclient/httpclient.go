package awsclient

import (
	"bytes"
	"fmt"
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
)

// HTTPClient returns the HTTP client every amibackup SDK client uses. It
// works around a client-side race in aws-sdk-go-v2 (issue
// 2737, "use of closed network connection"), not a server bug:
//
// smithy-go's ClientHandler closes the request body as soon as http.Client.Do
// returns, i.e. when the response headers have arrived. net/http's
// writeLoop may not have finished with the body by then: after copying
// Content-Length bytes it reads once more to check for excess data. The
// SDK wraps the body so that this read, after Close, returns io.EOF from
// WriteTo, which io.Copy reports as an error; writeLoop then fails the
// write and closes the connection while readLoop is still reading the
// response body, and the SDK sees "deserialization failed ... use of closed
// network connection". Over loopback (the local emulator) responses come
// fast enough to hit the window often, most visibly on large responses
// whose body is still being read when the close lands; against EC2 it is
// rarer, but each hit costs a retry and a throttling token.
//
// The workaround detaches the body: it is read into memory and replaced by
// a reader the SDK never sees, so closing the SDK's wrapper cannot affect
// the transport. Request bodies of the EC2 Query protocol are small forms,
// so the copy costs nothing that matters.
func HTTPClient() aws.HTTPClient { return detachedBodyClient{awshttp.NewBuildableClient()} }

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
