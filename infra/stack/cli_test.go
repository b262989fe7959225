package stack

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nsqk/nsqk/infra/config"
)

// TestCLISynth runs what `make synth` runs: the pinned CDK CLI (2.1148.1, the one that reads cloud
// assembly schema 55) synthesizing the app through cdk.json, offline, with cdk-nag and --strict,
// into a temporary directory. Placeholder Lambda binaries stand in for `make lambda`.
func TestCLISynth(t *testing.T) {
	root := repoRoot(t)
	cdk := filepath.Join(root, "_tools", "node_modules", ".bin", "cdk")
	if _, err := os.Stat(cdk); err != nil {
		t.Skip("the pinned CDK CLI is not installed: run `make tools`")
	}
	env := append(os.Environ(),
		"CDK_HOME="+t.TempDir(),
		"JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20",
		"CDK_DISABLE_VERSION_CHECK=true",
	)

	ver := exec.Command(cdk, "--version")
	ver.Dir, ver.Env = root, env
	if out, err := ver.Output(); err != nil || !strings.HasPrefix(strings.TrimSpace(string(out)), "2.1148.1") {
		t.Fatalf("cdk --version: %q, %v (want the pinned 2.1148.1)", out, err)
	}

	dist := t.TempDir()
	for _, n := range config.BuiltinConsumers {
		if err := os.MkdirAll(filepath.Join(dist, n), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dist, n, "bootstrap"), []byte("placeholder"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	outdir := t.TempDir()
	cmd := exec.Command(cdk, "synth", "--quiet", "--strict", "-o", outdir, "-c", config.KeyLambdaDistDir+"="+dist)
	cmd.Dir, cmd.Env = root, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cdk synth: %v\n%s", err, out)
	}

	b, err := os.ReadFile(filepath.Join(outdir, "nsqk.template.json"))
	if err != nil {
		t.Fatalf("no template: %v\n%s", err, out)
	}
	var tmpl struct {
		Resources map[string]struct{ Type string } `json:"Resources"`
	}
	if err := json.Unmarshal(b, &tmpl); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, r := range tmpl.Resources {
		counts[r.Type]++
	}
	for typ, n := range map[string]int{
		"AWS::Kinesis::Stream": 1, "AWS::ECS::Service": 1, "AWS::Lambda::EventSourceMapping": 2,
		"AWS::CloudWatch::Alarm": 26, "AWS::CloudWatch::Dashboard": 1, "AWS::DynamoDB::Table": 2,
	} {
		if counts[typ] != n {
			t.Errorf("%s: got %d, want %d", typ, counts[typ], n)
		}
	}
	if _, ok := counts["AWS::CDK::Metadata"]; ok {
		t.Error("version reporting is on: cdk.json must set versionReporting false")
	}

	report, err := os.ReadFile(filepath.Join(outdir, "AwsSolutions--nsqk-NagReport.csv"))
	if err != nil {
		t.Fatalf("no cdk-nag report: %v", err)
	}
	for _, line := range strings.Split(string(report), "\n") {
		// Non-Compliant: an unsuppressed finding; UNKNOWN: a rule that could not evaluate a resource.
		if strings.Contains(line, `"Non-Compliant"`) || strings.Contains(line, `"UNKNOWN"`) {
			t.Errorf("cdk-nag: %s", line)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "cdk.context.json")); err == nil {
		t.Log("note: cdk.context.json exists (context lookups were cached by an earlier run)")
	}

	var size int64
	_ = filepath.WalkDir(outdir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				size += info.Size()
			}
		}
		return nil
	})
	t.Logf("cloud assembly: %d KiB (placeholder Lambda binaries)", size/1024)
	if size > 10<<20 {
		t.Errorf("cloud assembly is %d MiB: an asset stages more than it should", size>>20)
	}
}

// TestCLISynthRefusesAConsumerWithoutItsPackage: a consumer named in context must have its main
// package in functions/<name>; the synth fails naming the key and the missing file.
func TestCLISynthRefusesAConsumerWithoutItsPackage(t *testing.T) {
	root := repoRoot(t)
	cdk := filepath.Join(root, "_tools", "node_modules", ".bin", "cdk")
	if _, err := os.Stat(cdk); err != nil {
		t.Skip("the pinned CDK CLI is not installed: run `make tools`")
	}
	cmd := exec.Command(cdk, "synth", "--quiet", "-o", t.TempDir(), "-c", config.KeyLambdaDistDir+"="+t.TempDir(),
		"-c", config.KeyConsumers+`={"geofence":{"batchSize":10}}`)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CDK_HOME="+t.TempDir(), "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20", "CDK_DISABLE_VERSION_CHECK=true")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("synth succeeded without functions/geofence:\n%s", out)
	}
	if want := `context "consumers": consumer "geofence" has no functions/geofence/main.go`; !strings.Contains(string(out), want) {
		t.Fatalf("want %q in the output, got:\n%s", want, out)
	}
}
