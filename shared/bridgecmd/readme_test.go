package bridgecmd

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nsqk/nsqk/shared/bridge"
)

// configurationReference is the page that documents every flag of the bridge program.
var configurationReference = filepath.Join("..", "..", "docs", "configuration.md")

// The configuration reference has one table row per flag (or per group of related flags) that
// names the flag in its first column and its environment variable in the second: a new flag
// without documentation fails here, and so does a row that gives a flag the wrong variable.
func TestConfigurationReferenceDocumentsEveryFlagAndVariable(t *testing.T) {
	b, err := os.ReadFile(configurationReference)
	if err != nil {
		t.Fatal(err)
	}
	rows := tableRows(string(b))
	if len(rows) == 0 {
		t.Fatalf("%s has no table", configurationReference)
	}
	o := bridge.NewOptions()
	var s Settings
	FlagSet(&o, &s).VisitAll(func(f *flag.Flag) {
		env := EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		for _, r := range rows {
			if len(r) >= 2 && strings.Contains(r[0], "`--"+f.Name+"`") && strings.Contains(r[1], "`"+env+"`") {
				return
			}
		}
		t.Errorf("%s has no row for --%s with %s", configurationReference, f.Name, env)
	})
}

// tableRows returns the cells of every Markdown table row in doc (header and separator rows
// included; they match no flag).
func tableRows(doc string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(doc, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") || !strings.HasSuffix(line, "|") {
			continue
		}
		rows = append(rows, strings.Split(strings.Trim(line, "|"), "|"))
	}
	return rows
}
