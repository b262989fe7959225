package bridgecmd

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nsqk/nsqk/shared/bridge"
)

// The README's configuration reference lists every flag of the bridge program with its
// environment variable: a new flag without documentation fails here.
func TestReadmeDocumentsEveryFlagAndVariable(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	o := bridge.NewOptions()
	var s Settings
	FlagSet(&o, &s).VisitAll(func(f *flag.Flag) {
		env := EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if !strings.Contains(doc, "`--"+f.Name+"`") || !strings.Contains(doc, "`"+env+"`") {
			t.Errorf("README.md does not document --%s / %s", f.Name, env)
		}
	})
}
