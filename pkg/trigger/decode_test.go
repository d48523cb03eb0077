package trigger

import (
	"strings"
	"testing"
)

// TestDecodeOneTrailing: the shared decoder catches what json.Decoder.More
// does not (a trailing '}' or ']').
func TestDecodeOneTrailing(t *testing.T) {
	for _, in := range []string{`{"a":1}}`, `{"a":1}]`, `{"a":1} 1`, `{"a":1}{}`} {
		var v map[string]any
		if err := decodeOne([]byte(in), &v, "x", false); err == nil || !strings.Contains(err.Error(), "x: invalid JSON: trailing data") {
			t.Errorf("%s: %v", in, err)
		}
		if err := strictDecode([]byte(in), &v, "x"); err == nil {
			t.Errorf("strict %s accepted", in)
		}
	}
}
