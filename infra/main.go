// Command infra is the nsqk CDK app: it reads the context (cdk.json and -c overrides), validates it,
// builds the stack and checks it with cdk-nag's AwsSolutions rules. Run it through the CDK CLI from
// the repository root (`make synth`, `make cdk-deploy`); see README.md (Deploying on AWS).
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/nsqk/nsqk/infra/stack"
)

// bridgeDockerfile is relative to the repository root, the image's build context.
const bridgeDockerfile = "functions/bridge/Dockerfile"

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
	if err := stack.CheckUnknownKeys(all); err != nil {
		return err
	}
	cfg, err := stack.ParseConfig(stack.MapContext(all))
	if err != nil {
		return err
	}

	// The CLI runs the app from the directory holding cdk.json: the repository root.
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(root, bridgeDockerfile)); err != nil {
		return fmt.Errorf("run the CDK CLI from the repository root (where cdk.json is): %w", err)
	}
	distDir := "dist"
	if v, ok := all[stack.KeyLambdaDistDir].(string); ok && v != "" {
		distDir = v
	}
	if !filepath.IsAbs(distDir) {
		distDir = filepath.Join(root, distDir)
	}
	codeDirs := map[string]string{}
	for _, name := range stack.ConsumerNames {
		codeDirs[name] = filepath.Join(distDir, name)
	}

	props := &stack.NsqkStackProps{
		Config:           cfg,
		LambdaCodeDirs:   codeDirs,
		BridgeImageDir:   root,
		BridgeDockerfile: bridgeDockerfile,
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
