// Package lambdabuild holds how a function's bootstrap is built: the stacks
// bundle with it (linux/arm64, provided.al2023), the local run and the
// end-to-end tests build with it for this machine, and a test keeps the
// Makefile's copy in step.
package lambdabuild

// Flags are the go build flags of every bootstrap: lambda.norpc drops
// aws-lambda-go's unused net/rpc server; -trimpath and -s -w make the
// binary reproducible and small.
var Flags = []string{"-tags", "lambda.norpc", "-trimpath", "-ldflags=-s -w"}

// Deployed platform of the functions.
const (
	GOOS   = "linux"
	GOARCH = "arm64"
)
