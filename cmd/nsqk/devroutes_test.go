package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// Two routes and two bridge groups over four nsqd nodes: every message written once, in order
// per key and node, each node's channel of each topic read by exactly one group.
func TestDevRoutesAndGroups(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kinesalite")
	}
	var out bytes.Buffer
	res, err := runDevRoutes(context.Background(), devOptions{duration: 2 * time.Second, rate: 2000, users: 50, shards: 2,
		keyBuckets: 1, maxBuffered: 20 * time.Millisecond, every: time.Second, dir: t.TempDir(), emulator: "kinesalite",
		routes: 2, groups: 2, nodes: 4}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if res.Published < 1000 || res.Written != res.Published || res.Missing != 0 || res.Duplicates != 0 || res.OrderViolations != 0 {
		t.Fatalf("%+v\n%s", res, out.String())
	}
	if len(res.Readers) != 8 {
		t.Fatalf("%d node/topic channels, want 8: %v", len(res.Readers), res.Readers)
	}
	for k, v := range res.Readers {
		if v != 1 {
			t.Fatalf("%s read by %d bridges", k, v)
		}
	}
	if n := len(res.Owned[0]) + len(res.Owned[1]); n != 4 {
		t.Fatalf("groups own %v", res.Owned)
	}
	if !strings.Contains(out.String(), "summary") {
		t.Fatalf("no summary:\n%s", out.String())
	}
}
