// Command infra is the amibackup CDK app (cdk.json: "go run ./infra").
package main

import (
	"fmt"
	"os"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/infra/stacks"
)

func main() {
	defer jsii.Close()
	app := awscdk.NewApp(nil)
	root, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := stacks.Build(app, root); err != nil {
		fmt.Fprintf(os.Stderr, "amibackup: %v\n", err)
		os.Exit(1)
	}
	app.Synth(nil)
}
