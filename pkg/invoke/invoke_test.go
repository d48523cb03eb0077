package invoke

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
)

type summary struct {
	Function string   `json:"function"`
	Warnings []string `json:"warnings,omitempty"`
}

// TestInvokePassesWholePayload: the handler sees the payload byte for byte,
// including what follows the first JSON value and an empty payload, which
// aws-lambda-go's reflective json.RawMessage handlers cut off or turn into
// a bare "EOF".
func TestInvokePassesWholePayload(t *testing.T) {
	for _, payload := range []string{``, `{"policy":"nightly"} garbage`, `{"a":1}{"force":true}`, `null`, " \n"} {
		var got []byte
		f := Func[*summary](func(_ context.Context, p []byte) (*summary, error) {
			got = p
			return nil, errors.New("rejected")
		})
		if _, err := f.Invoke(context.Background(), []byte(payload)); err == nil {
			t.Fatal("error lost")
		}
		if string(got) != payload {
			t.Errorf("handler got %q, want %q", got, payload)
		}
	}
}

type codedError struct{ code string }

func (e *codedError) Error() string { return "coded: " + e.code }

// TestInvokeReturnsErrorUnchanged: aws-lambda-go reports errorType as the
// returned error's type name and errorMessage as its text; Invoke returns
// the handler's error itself so both stay what they were.
func TestInvokeReturnsErrorUnchanged(t *testing.T) {
	for _, want := range []error{errors.New("input: is empty"), fmt.Errorf("event.detail: %w", errors.New("x")), &codedError{"Throttled"}} {
		f := Func[*summary](func(context.Context, []byte) (*summary, error) { return &summary{Function: "ignored"}, want })
		out, err := f.Invoke(context.Background(), nil)
		if err != want || out != nil {
			t.Errorf("Invoke = %q, %v; want nil, the handler's %v", out, err, want)
		}
		if reflect.TypeOf(err) != reflect.TypeOf(want) || err.Error() != want.Error() {
			t.Errorf("type %T message %q changed", err, err)
		}
	}
}

// TestInvokeRendersResult: as aws-lambda-go renders a handler's result: JSON
// without HTML escaping and without the encoder's newline; nil is null.
func TestInvokeRendersResult(t *testing.T) {
	tests := []struct {
		name string
		res  *summary
		want string
	}{
		{"summary", &summary{Function: "backup", Warnings: []string{"tag <Backup> & more"}}, `{"function":"backup","warnings":["tag <Backup> & more"]}`},
		{"nil", nil, `null`},
	}
	for _, tt := range tests {
		f := Func[*summary](func(context.Context, []byte) (*summary, error) { return tt.res, nil })
		out, err := f.Invoke(context.Background(), []byte(`{}`))
		if err != nil || string(out) != tt.want {
			t.Errorf("%s: %q, %v; want %q", tt.name, out, err, tt.want)
		}
	}
	bad := Func[float64](func(context.Context, []byte) (float64, error) { return math.NaN(), nil })
	if _, err := bad.Invoke(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "encode the function's result") {
		t.Errorf("unencodable result: %v", err)
	}
}

// handler is aws-lambda-go's lambda.Handler, restated so this package need
// not import aws-lambda-go (the mains convert to lambda.Handler, which the
// compiler checks there).
type handler interface {
	Invoke(ctx context.Context, payload []byte) ([]byte, error)
}

var _ handler = Func[*summary](nil)
