// Package invoke connects a function's handler to the Lambda runtime with
// the raw payload. aws-lambda-go's reflective handlers decode only the first
// JSON value of the payload (a json.RawMessage argument included), so
// `{"policy":...} garbage` or a second JSON object would never reach the
// project's parsers and the first object would run; a type with
// aws-lambda-go's Handler method, Invoke(ctx, payload) ([]byte, error), is
// given the payload as received. This package does not import
// aws-lambda-go: the mains pass a Func to lambda.Start.
package invoke

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
)

// Func is a function's handler: the whole payload in, the result out.
type Func[T any] func(ctx context.Context, payload []byte) (T, error)

// Invoke runs f on the payload exactly as received and renders its result
// as aws-lambda-go renders a reflective handler's result (JSON without HTML
// escaping and without a trailing newline; a nil result is null). f's error
// is returned unchanged, so Lambda reports the same errorType (the error's
// type name) and errorMessage (its text) as before.
func (f Func[T]) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	out, err := f(ctx, payload)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		return nil, fmt.Errorf("encode the function's result: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
