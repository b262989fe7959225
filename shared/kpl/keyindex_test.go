package kpl

import (
	"fmt"
	"testing"
)

// keyIndex against a map: same indexes for the same keys, through growth and resets.
func TestKeyIndexMatchesAMap(t *testing.T) {
	x := newKeyIndex()
	for round := 0; round < 3; round++ {
		want := map[string]uint64{}
		for i := 0; i < 5000; i++ {
			k := fmt.Sprintf("k%d", (i*7919)%3000) // repeats: half the keys come back
			idx, found, pos, h := x.find(k)
			w, ok := want[k]
			if found != ok || (found && idx != w) {
				t.Fatalf("round %d key %q: found=%v idx=%d, map says %v %d", round, k, found, idx, ok, w)
			}
			if !found {
				if got := x.insert(k, pos, h); got != uint64(len(want)) {
					t.Fatalf("inserted %q at %d, want %d", k, got, len(want))
				}
				want[k] = uint64(len(want))
			}
		}
		if x.len() != len(want) {
			t.Fatalf("len %d, want %d", x.len(), len(want))
		}
		x.reset()
		if x.len() != 0 {
			t.Fatal("not empty after reset")
		}
		if _, found, _, _ := x.find("k1"); found {
			t.Fatal("a key survived the reset")
		}
	}
}
