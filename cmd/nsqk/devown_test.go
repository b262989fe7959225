package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Own consumers are the functions/<name>/main.go that are neither the bridge nor a built-in.
func TestFindConsumers(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"bridge/main.go", "monitor/main.go", "lastlocation/main.go", "orders/main.go", "geofence/main.go", "notes/README.md"} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte("package main\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		pick string
		want []string
		err  string
	}{
		{pick: "all", want: []string{"geofence", "orders"}},
		{pick: "none"},
		{pick: "orders", want: []string{"orders"}},
		{pick: "orders, geofence", want: []string{"orders", "geofence"}},
		{pick: "monitor", err: "always run"},
		{pick: "notes", err: "no " + filepath.Join(dir, "notes", "main.go")},
	} {
		got, err := findConsumers(dir, tc.pick)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one saying %q", tc.pick, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: %v, %v; want %v", tc.pick, got, err, tc.want)
		}
	}
}
