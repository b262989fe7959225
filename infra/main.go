// Command infra is the nsqk CDK app: it reads the context (cdk.json and -c overrides), validates it,
// builds the stack and checks it with cdk-nag's AwsSolutions rules. Run it through the CDK CLI from
// the repository root (`make synth`, `make cdk-deploy`).
package main

import (
	"fmt"
	"os"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/nsqk/nsqk/infra/config"
	"github.com/nsqk/nsqk/infra/stack"
)

func main() {
	defer jsii.Close()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "nsqk infra:", err)
		os.Exit(1)
	}
}

func run() error {
	app := awscdk.NewApp(nil)
	all, _ := app.Node().GetAllContext(nil).(map[string]any)
	cfg, err := config.Load(all)
	if err != nil {
		return err
	}
	// The CLI runs the app from the directory holding cdk.json: the repository root.
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	props, err := stack.RepositoryProps(root, cfg)
	if err != nil {
		return err
	}
	if _, err := stack.NewNsqkStack(app, cfg.StackName, props); err != nil {
		return err
	}
	// Every resource is checked against the AwsSolutions rules; a finding that is not suppressed
	// (with its reason) fails the synth.
	awscdk.Aspects_Of(app).Add(cdknag.NewAwsSolutionsChecks(&cdknag.NagPackProps{Verbose: jsii.Bool(true)}), nil)
	app.Synth(nil)
	return nil
}
