package localtest

import (
	"os/exec"
	"strings"
	"testing"
)

// TestProductImportsNoToolingOrStandIns keeps the three rooms apart: what users run (shared/...,
// functions/..., infra/...) never depends on the local stand-ins (shared/local/...) or on the
// benchmark and fault-suite code (cmd/nsqk/internal/...).
func TestProductImportsNoToolingOrStandIns(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go command not on PATH")
	}
	const mod = "github.com/nsqk/nsqk/"
	out, err := exec.Command("go", "list", "-deps",
		"-f", `{{range .Deps}}{{$.ImportPath}} {{.}}{{"\n"}}{{end}}`,
		"../../...", "../../../functions/...", "../../../infra/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	products := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		from, dep, ok := strings.Cut(line, " ")
		if !ok || !strings.HasPrefix(from, mod) || strings.HasPrefix(from, mod+"shared/local/") {
			continue
		}
		products++
		if strings.HasPrefix(dep, mod+"shared/local/") || strings.HasPrefix(dep, mod+"cmd/") {
			t.Errorf("product package %s imports %s", from, dep)
		}
	}
	if products == 0 {
		t.Fatal("go list found no product package: the patterns are wrong")
	}
}
