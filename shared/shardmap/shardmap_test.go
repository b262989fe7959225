package shardmap

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"testing"
)

func TestHashKeyMatchesKinesisDefinition(t *testing.T) {
	// MD5("a") = 0cc175b9c0f1b6a831c399e269772661, read as a big-endian integer.
	want, _ := new(big.Int).SetString("0cc175b9c0f1b6a831c399e269772661", 16)
	if got := HashKey("a").String(); got != want.String() {
		t.Fatalf("HashKey(a) = %s, want %s", got, want)
	}
	for _, s := range []string{"0", "1", "170141183460469231731687303715884105727", MaxHash.String()} {
		h, err := ParseHash(s)
		if err != nil || h.String() != s {
			t.Fatalf("round trip %s: %v %v", s, h, err)
		}
	}
	for _, bad := range []string{"", "-1", "x", "340282366920938463463374607431768211456"} {
		if _, err := ParseHash(bad); err == nil {
			t.Fatalf("ParseHash(%q) accepted", bad)
		}
	}
}

// evenMap splits the space like CreateStream does: n ranges of 2^128/n.
func evenMap(t *testing.T, n int) *Map {
	t.Helper()
	space := new(big.Int).Lsh(big.NewInt(1), 128)
	step := new(big.Int).Div(space, big.NewInt(int64(n)))
	var shards []Shard
	for i := 0; i < n; i++ {
		start := new(big.Int).Mul(step, big.NewInt(int64(i)))
		end := new(big.Int).Sub(new(big.Int).Add(start, step), big.NewInt(1))
		if i == n-1 {
			end = new(big.Int).Sub(space, big.NewInt(1))
		}
		s, _ := ParseHash(start.String())
		e, _ := ParseHash(end.String())
		shards = append(shards, Shard{ID: fmt.Sprintf("shardId-%012d", i), Start: s, End: e})
	}
	// Shuffle: New must sort.
	rand.Shuffle(len(shards), func(i, j int) { shards[i], shards[j] = shards[j], shards[i] })
	m, err := New(shards)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLookupAgreesWithLinearScan(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 64} {
		m := evenMap(t, n)
		rng := rand.New(rand.NewPCG(1, uint64(n)))
		probe := []Hash{{}, MaxHash}
		for _, s := range m.Shards() {
			probe = append(probe, s.Start, s.End)
		}
		for i := 0; i < 2000; i++ {
			probe = append(probe, HashKey(fmt.Sprint(rng.Uint64())))
		}
		for _, h := range probe {
			got := m.Lookup(h)
			s := m.Shards()[got]
			if h.Compare(s.Start) < 0 || h.Compare(s.End) > 0 {
				t.Fatalf("n=%d: %s mapped to %s [%s, %s]", n, h, s.ID, s.Start, s.End)
			}
		}
	}
}

func TestNewRejectsGapsAndOverlaps(t *testing.T) {
	m := evenMap(t, 3)
	s := m.Shards()
	gap := []Shard{s[0], s[2]}
	if _, err := New(gap); err == nil {
		t.Fatal("gap accepted")
	}
	overlap := []Shard{s[0], {ID: "x", Start: s[0].End, End: s[1].End}, s[2]}
	if _, err := New(overlap); err == nil {
		t.Fatal("overlap accepted")
	}
	if _, err := New(nil); err == nil {
		t.Fatal("empty accepted")
	}
}
