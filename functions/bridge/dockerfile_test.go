package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// Every image the bridge's Dockerfile pulls (the build frontend and each FROM that is not an
// earlier stage) is pinned by digest, so a rebuild cannot pick up a different base silently.
func TestDockerfileImagesPinnedByDigest(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	pinned := regexp.MustCompile(`^[a-z0-9./_-]+(:[A-Za-z0-9._-]+)?@sha256:[0-9a-f]{64}$`)
	lines := strings.Split(string(b), "\n")
	if !strings.HasPrefix(lines[0], "# syntax=") {
		t.Fatalf("first line %q: want the # syntax= frontend line", lines[0])
	}
	if ref := strings.TrimPrefix(lines[0], "# syntax="); !pinned.MatchString(ref) {
		t.Errorf("build frontend %q is not pinned by digest", ref)
	}
	stages := map[string]bool{}
	froms := 0
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.EqualFold(f[0], "FROM") {
			continue
		}
		froms++
		args := f[1:]
		for len(args) > 0 && strings.HasPrefix(args[0], "--") {
			args = args[1:]
		}
		if len(args) == 0 {
			t.Fatalf("FROM without an image: %q", line)
		}
		if !stages[args[0]] && !pinned.MatchString(args[0]) {
			t.Errorf("base image %q is not pinned by digest (image[:tag]@sha256:<64 hex>)", args[0])
		}
		if len(args) == 3 && strings.EqualFold(args[1], "AS") {
			stages[args[2]] = true
		}
	}
	if froms < 2 {
		t.Errorf("found %d FROM lines, want the build and the runtime stage", froms)
	}
}
