package lambdabuild

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestMakefileBuildsWithFlags: `make build` and `make build-local` build
// the bootstraps the stacks deploy and the local run executes; the
// Makefile's GO_LAMBDA_FLAGS must say what Flags says, and its arm64 build
// must target the deployed platform.
func TestMakefileBuildsWithFlags(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^GO_LAMBDA_FLAGS\s*:?=\s*(.*)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("Makefile has no GO_LAMBDA_FLAGS line")
	}
	got, err := shellWords(string(m[1]))
	if err != nil {
		t.Fatalf("GO_LAMBDA_FLAGS: %v", err)
	}
	if !slices.Equal(got, Flags) {
		t.Errorf("Makefile GO_LAMBDA_FLAGS = %q, lambdabuild.Flags = %q: make them the same", got, Flags)
	}
	want := fmt.Sprintf("GOOS=%s GOARCH=%s go build $(GO_LAMBDA_FLAGS)", GOOS, GOARCH)
	if !strings.Contains(string(b), want) {
		t.Errorf("Makefile's build target does not run %q", want)
	}
}

// shellWords splits s as the shell splits a command's arguments: white
// space separates words, single and double quotes group (the quotes go),
// a backslash outside single quotes escapes the next character.
func shellWords(s string) ([]string, error) {
	var out []string
	var w strings.Builder
	inWord := false
	var quote rune
	esc := false
	for _, r := range s {
		switch {
		case esc:
			w.WriteRune(r)
			esc = false
		case quote == '\'':
			if r == '\'' {
				quote = 0
			} else {
				w.WriteRune(r)
			}
		case r == '\\':
			esc, inWord = true, true
		case quote == '"':
			if r == '"' {
				quote = 0
			} else {
				w.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				out = append(out, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 || esc {
		return nil, fmt.Errorf("unterminated quote or escape in %q", s)
	}
	if inWord {
		out = append(out, w.String())
	}
	return out, nil
}

func TestShellWords(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{`-tags lambda.norpc -trimpath -ldflags='-s -w'`, []string{"-tags", "lambda.norpc", "-trimpath", "-ldflags=-s -w"}},
		{`-ldflags="-s -w"  -x`, []string{"-ldflags=-s -w", "-x"}},
		{`-ldflags=-s -w`, []string{"-ldflags=-s", "-w"}},
		{`a\ b ''`, []string{"a b", ""}},
		{``, nil},
	}
	for _, tc := range tests {
		got, err := shellWords(tc.in)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("shellWords(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := shellWords(`-ldflags='-s -w`); err == nil {
		t.Error("unterminated quote accepted")
	}
}
