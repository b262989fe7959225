package stack

// Test helpers for the CDK tests.
//
// jsii is not goroutine-safe: no t.Parallel() anywhere in this package. Each stack variant is
// synthesized once (lazily, the first time a test asks for it) and shared by all subtests.
// Assertion helpers of aws-cdk-lib panic on failure: run them through must().

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/nsqk/nsqk/infra/config"
)

// must runs a CDK assertion and turns its panic into a test failure with the assertion's message.
func must(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("%s: %v", what, r)
		}
	}()
	f()
}

// repoRoot is the repository root (this file is infra/stack/helpers_test.go).
func repoRoot(t testing.TB) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller information")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// cdkJSONContext returns the "context" object of the repository's cdk.json, so tests synthesize
// with the same feature flags and defaults as `make synth`.
func cdkJSONContext(t testing.TB) map[string]any {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "cdk.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Context map[string]any `json:"context"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("cdk.json: %v", err)
	}
	return doc.Context
}

// variant is one synthesized stack and everything the tests inspect.
type variant struct {
	cfg      *config.Config
	stack    *NsqkStack
	template assertions.Template
	annots   assertions.Annotations
	json     map[string]any // the template as plain Go data
	outdir   string
	synthDur time.Duration
}

var variants = map[string]*variant{}

// synthVariant builds (once) the stack for cdk.json's context plus overrides, with cdk-nag's
// AwsSolutions checks applied exactly as in the app.
func synthVariant(t *testing.T, name string, overrides map[string]any) *variant {
	t.Helper()
	if v, ok := variants[name]; ok {
		return v
	}
	start := time.Now()
	ctx := cdkJSONContext(t)
	for k, v := range overrides {
		if v == nil {
			delete(ctx, k)
		} else {
			ctx[k] = v
		}
	}
	cfg, err := config.Parse(config.MapContext(ctx))
	if err != nil {
		t.Fatalf("variant %s: %v", name, err)
	}
	// Nag findings must surface as annotations (not only in the validation report) to be asserted.
	ctx["@aws-cdk/core:annotationsInValidationReport"] = false
	// As the CLI does: resources carry their construct path (the tests find resources by it).
	ctx["aws:cdk:enable-path-metadata"] = true

	outdir, err := os.MkdirTemp("", "nsqk-cdk-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	codeDirs := map[string]string{}
	for _, n := range cfg.ConsumerNames() {
		dir := filepath.Join(outdir, "..", filepath.Base(outdir)+"-dist", n)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "bootstrap"), []byte("placeholder for "+n), 0o755); err != nil {
			t.Fatal(err)
		}
		codeDirs[n] = dir
	}

	v := &variant{cfg: cfg, outdir: outdir}
	must(t, "synth "+name, func() {
		app := awscdk.NewApp(&awscdk.AppProps{Context: &ctx, Outdir: jsii.String(outdir)})
		s, err := NewNsqkStack(app, cfg.StackName, &NsqkStackProps{
			Config:           cfg,
			LambdaCodeDirs:   codeDirs,
			BridgeImageDir:   repoRoot(t),
			BridgeDockerfile: "functions/bridge/Dockerfile",
		})
		if err != nil {
			panic(err)
		}
		awscdk.Aspects_Of(app).Add(cdknag.NewAwsSolutionsChecks(&cdknag.NagPackProps{Verbose: jsii.Bool(true)}), nil)
		v.stack = s
		v.template = assertions.Template_FromStack(s.Stack, nil)
		v.annots = assertions.Annotations_FromStack(s.Stack)
		raw, err := json.Marshal(v.template.ToJSON())
		if err != nil {
			panic(err)
		}
		if err := json.Unmarshal(raw, &v.json); err != nil {
			panic(err)
		}
	})
	v.synthDur = time.Since(start)
	t.Logf("variant %s synthesized in %s", name, v.synthDur.Round(time.Millisecond))
	variants[name] = v
	return v
}

// TestMain removes the temporary cloud assemblies after the run.
func TestMain(m *testing.M) {
	code := m.Run()
	for _, v := range variants {
		os.RemoveAll(v.outdir)
		os.RemoveAll(v.outdir + "-dist")
	}
	os.Exit(code)
}

// resources returns logical id -> resource of one type.
func (v *variant) resources(typ string) map[string]map[string]any {
	out := map[string]map[string]any{}
	for id, r := range v.json["Resources"].(map[string]any) {
		res := r.(map[string]any)
		if res["Type"] == typ {
			out[id] = res
		}
	}
	return out
}

// one returns the only resource of a type (fails otherwise).
func (v *variant) one(t *testing.T, typ string) (string, map[string]any) {
	t.Helper()
	rs := v.resources(typ)
	if len(rs) != 1 {
		t.Fatalf("want exactly one %s, got %d", typ, len(rs))
	}
	for id, r := range rs {
		return id, r
	}
	return "", nil
}

// byPath returns the logical id of the resource whose aws:cdk:path is <stack>/<path>.
func (v *variant) byPath(t *testing.T, path string) (string, map[string]any) {
	t.Helper()
	want := v.cfg.StackName + "/" + path
	for id, r := range v.json["Resources"].(map[string]any) {
		res := r.(map[string]any)
		if md, ok := res["Metadata"].(map[string]any); ok && md["aws:cdk:path"] == want {
			return id, res
		}
	}
	t.Fatalf("no resource at path %s", want)
	return "", nil
}

func props(r map[string]any) map[string]any {
	p, _ := r["Properties"].(map[string]any)
	return p
}

// ref renders an intrinsic as a short string: {"Ref":"X"} -> "Ref:X", {"Fn::GetAtt":["X","Arn"]}
// -> "X.Arn"; literals stay as they are; anything else as JSON.
func ref(x any) string {
	switch t := x.(type) {
	case string:
		return t
	case map[string]any:
		if r, ok := t["Ref"].(string); ok {
			return "Ref:" + r
		}
		if ga, ok := t["Fn::GetAtt"].([]any); ok && len(ga) == 2 {
			return fmt.Sprintf("%v.%v", ga[0], ga[1])
		}
	}
	b, _ := json.Marshal(x)
	return string(b)
}

func asList(x any) []any {
	if l, ok := x.([]any); ok {
		return l
	}
	if x == nil {
		return nil
	}
	return []any{x}
}

// grants flattens every IAM::Policy attached to a role into "action @ resource" pairs, sorted.
func (v *variant) grants(t *testing.T, roleID string) []string {
	t.Helper()
	var out []string
	for _, pol := range v.resources("AWS::IAM::Policy") {
		p := props(pol)
		attached := false
		for _, r := range asList(p["Roles"]) {
			if ref(r) == "Ref:"+roleID {
				attached = true
			}
		}
		if !attached {
			continue
		}
		for _, s := range asList(p["PolicyDocument"].(map[string]any)["Statement"]) {
			st := s.(map[string]any)
			if st["Effect"] != "Allow" {
				t.Fatalf("role %s: unexpected %v statement", roleID, st["Effect"])
			}
			for _, a := range asList(st["Action"]) {
				for _, r := range asList(st["Resource"]) {
					out = append(out, fmt.Sprintf("%s @ %s", a, ref(r)))
				}
			}
		}
	}
	// Managed policies would escape the check above: there must be none.
	role := v.json["Resources"].(map[string]any)[roleID].(map[string]any)
	if mp := props(role)["ManagedPolicyArns"]; mp != nil {
		t.Fatalf("role %s has managed policies %v", roleID, mp)
	}
	if pols := props(role)["Policies"]; pols != nil {
		t.Fatalf("role %s has inline policies %v", roleID, pols)
	}
	sort.Strings(out)
	return out
}

// pairs builds the expected "action @ resource" list.
func pairs(resource string, actions ...string) []string {
	var out []string
	for _, a := range actions {
		out = append(out, a+" @ "+resource)
	}
	return out
}

func sortedConcat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	sort.Strings(out)
	return out
}

func equalStrings(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s:\n got: %s\nwant: %s", what, strings.Join(got, "\n      "), strings.Join(want, "\n      "))
	}
}

// get walks a path of map keys / list indexes through template data.
func get(x any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := x.(map[string]any)
			if !ok {
				return nil
			}
			x = m[k]
		case int:
			l, ok := x.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			x = l[k]
		}
	}
	return x
}

func wantEq(t *testing.T, what string, got, want any) {
	t.Helper()
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		t.Errorf("%s: got %s, want %s", what, gb, wb)
	}
}
