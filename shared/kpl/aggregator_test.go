package kpl

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// in is a user record as given to Add.
type in struct {
	PK, EHK string
	Data    []byte
}

// gen draws random user records that stress the encoding: empty and binary data, lengths around
// the 1-, 2- and 3-byte varint boundaries, UTF-8 keys of 1..256 characters, repeated keys.
type gen struct {
	r          *rand.Rand
	pks, ehks  []string
	maxDataLen int
}

func newGen(seed uint64) *gen {
	return &gen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), maxDataLen: 20000}
}

var keyRunes = []rune("abcXYZ019-_.:/ éß日本語😀🦀")

func (g *gen) key() string {
	// Mostly short keys; some at or near the 256-character limit.
	n := 1 + g.r.IntN(12)
	switch g.r.IntN(10) {
	case 0:
		n = 1 + g.r.IntN(256)
	case 1:
		n = 250 + g.r.IntN(7)
	}
	var b strings.Builder
	units := 0
	for units < n {
		c := keyRunes[g.r.IntN(len(keyRunes))]
		u := 1
		if c > 0xFFFF {
			u = 2
		}
		if units+u > n {
			c, u = 'k', 1
		}
		b.WriteRune(c)
		units += u
	}
	return b.String()
}

func (g *gen) hashKey() string {
	switch g.r.IntN(4) {
	case 0:
		return "0"
	case 1:
		return maxHashKey
	}
	n := 1 + g.r.IntN(38)
	b := []byte{byte('1' + g.r.IntN(9))}
	for range n - 1 {
		b = append(b, byte('0'+g.r.IntN(10)))
	}
	return string(b)
}

func (g *gen) data() []byte {
	var n int
	switch g.r.IntN(10) {
	case 0:
		n = 0
	case 1:
		n = 120 + g.r.IntN(20) // around 128
	case 2:
		n = 16370 + g.r.IntN(30) // around 16384
	case 3:
		n = g.r.IntN(g.maxDataLen + 1)
	default:
		n = g.r.IntN(300)
	}
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], g.r.Uint64())
	}
	return b[:n:n]
}

func (g *gen) record() in {
	var pk, ehk string
	if len(g.pks) > 0 && g.r.IntN(3) == 0 {
		pk = g.pks[g.r.IntN(len(g.pks))]
	} else {
		pk = g.key()
		g.pks = append(g.pks, pk)
	}
	switch g.r.IntN(4) {
	case 0: // no explicit hash key
	case 1:
		if len(g.ehks) > 0 {
			ehk = g.ehks[g.r.IntN(len(g.ehks))]
			break
		}
		fallthrough
	default:
		ehk = g.hashKey()
		g.ehks = append(g.ehks, ehk)
	}
	return in{pk, ehk, g.data()}
}

// toSimple is the expected de-aggregated view of records added in one aggregate.
func toSimple(rs []in) []simple {
	out := make([]simple, len(rs))
	for i, r := range rs {
		out[i] = simple{Seq: i, PK: sp(r.PK), Data: string(r.Data)}
		if r.EHK != "" {
			out[i].EHK = sp(r.EHK)
		}
	}
	return out
}

// sizeWith is Size() of an unlimited aggregator holding rs, computed by replaying them: an
// oracle for the limit checks that does not share the code path of Add's checks.
func sizeWith(t *testing.T, cfg AggregatorConfig, rs []in) int {
	t.Helper()
	cfg.MaxSize, cfg.MaxRecords = 1<<40, 0
	a := NewAggregator(cfg)
	for _, r := range rs {
		if err := a.Add(r.PK, r.EHK, r.Data); err != nil {
			t.Fatal(err)
		}
	}
	size := a.Size()
	rec := a.Flush(nil)
	if got := len(rec.Data) + len(rec.PartitionKey); got != size {
		t.Fatalf("Size() = %d before Flush, emitted record counts %d", size, got)
	}
	return size
}

// checkEmitted de-aggregates one emitted record and compares it with the records added.
func checkEmitted(t *testing.T, cfg AggregatorConfig, rec Record, rs []in) {
	t.Helper()
	out, aggregated, err := Deaggregate(rec.Data)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RawSingle && len(rs) == 1 && !IsAggregated(rs[0].Data) {
		if aggregated || rec.PartitionKey != rs[0].PK || rec.ExplicitHashKey != rs[0].EHK || !bytes.Equal(rec.Data, rs[0].Data) {
			t.Fatalf("RawSingle emission %q/%q aggregated=%t, want the plain record %q/%q", rec.PartitionKey, rec.ExplicitHashKey, aggregated, rs[0].PK, rs[0].EHK)
		}
		return
	}
	if !aggregated {
		t.Fatalf("emitted record of %d user records is not an aggregate", len(rs))
	}
	wantPK := cfg.OuterPartitionKey
	if wantPK == "" {
		wantPK = "a"
	}
	wantEHK := cfg.OuterExplicitHashKey
	if wantEHK == "" {
		wantEHK = rs[0].EHK
	}
	if rec.PartitionKey != wantPK || rec.ExplicitHashKey != wantEHK {
		t.Errorf("outer keys %q/%q, want %q/%q", rec.PartitionKey, rec.ExplicitHashKey, wantPK, wantEHK)
	}
	if diff := cmp.Diff(toSimple(rs), simplify(out)); diff != "" {
		t.Fatalf("round trip of %d records (-want +got):\n%s", len(rs), diff)
	}
}

// TestRoundTrip adds random records with random limits, flushing on ErrFull, and checks every
// emitted record, Size() exactness, and that ErrFull comes exactly when the record would push the
// size over MaxSize (or past MaxRecords).
func TestRoundTrip(t *testing.T) {
	iterations := 60
	if testing.Short() {
		iterations = 10
	}
	for it := range iterations {
		seed := uint64(it) + 1
		g := newGen(seed)
		cfg := AggregatorConfig{RawSingle: it%3 == 0}
		switch it % 4 {
		case 0: // defaults: 1 MiB
		case 1:
			cfg.MaxSize = 200 + g.r.IntN(5000)
			g.maxDataLen = 300
		case 2:
			cfg.MaxSize = 50000 + g.r.IntN(100000)
			cfg.MaxRecords = 1 + g.r.IntN(300)
		case 3:
			cfg.MaxSize = 1 << 26
			cfg.OuterPartitionKey = g.key()
			if g.r.IntN(2) == 0 {
				cfg.OuterExplicitHashKey = g.hashKey()
			}
		}
		maxSize := cfg.MaxSize
		if maxSize == 0 {
			maxSize = DefaultMaxRecordSize
		}
		n := 1 + g.r.IntN(2000)
		t.Run(strconv.Itoa(it), func(t *testing.T) {
			a := NewAggregator(cfg)
			var held []in
			var buf []byte
			flush := func() {
				size := a.Size()
				rec := a.Flush(buf)
				if got := len(rec.Data) + len(rec.PartitionKey); got != size || size > maxSize {
					t.Fatalf("Size() = %d, emitted %d, MaxSize %d", size, got, maxSize)
				}
				checkEmitted(t, cfg, rec, held)
				if a.Len() != 0 || a.Size() != 0 {
					t.Fatalf("after Flush: Len %d Size %d", a.Len(), a.Size())
				}
				held, buf = held[:0], rec.Data
			}
			for range n {
				r := g.record()
				err := a.Add(r.PK, r.EHK, r.Data)
				switch {
				case err == nil:
					held = append(held, r)
					if a.Len() != len(held) || a.Size() > maxSize {
						t.Fatalf("after Add: Len %d (want %d), Size %d > MaxSize %d", a.Len(), len(held), a.Size(), maxSize)
					}
					if g.r.IntN(200) == 0 && a.Size() != sizeWith(t, cfg, held) {
						t.Fatalf("Size() = %d, replay says %d", a.Size(), sizeWith(t, cfg, held))
					}
				case errors.Is(err, ErrFull):
					if len(held) == 0 {
						t.Fatal("ErrFull on an empty aggregator")
					}
					overRecords := cfg.MaxRecords > 0 && len(held) >= cfg.MaxRecords
					if s := sizeWith(t, cfg, append(held[:len(held):len(held)], r)); s <= maxSize && !overRecords {
						t.Fatalf("ErrFull but the record fits: size would be %d <= %d", s, maxSize)
					}
					flush()
					if err := a.Add(r.PK, r.EHK, r.Data); err != nil {
						t.Fatalf("Add after Flush: %v", err)
					}
					held = append(held, r)
				case errors.Is(err, ErrTooLarge):
					if s := sizeWith(t, cfg, []in{r}); s <= maxSize {
						t.Fatalf("ErrTooLarge but the record alone counts %d <= %d", s, maxSize)
					}
				default:
					t.Fatal(err)
				}
			}
			flush()
		})
	}
}

// TestSizeBoundary: a record that makes Size() == MaxSize fits; with one byte less it does not.
func TestSizeBoundary(t *testing.T) {
	g := newGen(42)
	g.maxDataLen = 20000
	for it := range 300 {
		cfg := AggregatorConfig{RawSingle: it%2 == 0, OuterPartitionKey: []string{"", "x", "outer-key"}[it%3]}
		prefix := make([]in, g.r.IntN(40))
		for i := range prefix {
			prefix[i] = g.record()
		}
		r := g.record()
		exact := sizeWith(t, cfg, append(prefix, r))

		cfg.MaxSize = exact
		a := NewAggregator(cfg)
		for _, p := range prefix {
			if err := a.Add(p.PK, p.EHK, p.Data); err != nil {
				t.Fatalf("prefix: %v", err)
			}
		}
		if err := a.Add(r.PK, r.EHK, r.Data); err != nil {
			t.Fatalf("record making Size() == MaxSize (%d) rejected: %v", exact, err)
		}
		if a.Size() != exact {
			t.Fatalf("Size() = %d, want %d", a.Size(), exact)
		}

		cfg.MaxSize = exact - 1
		a = NewAggregator(cfg)
		for _, p := range prefix {
			if err := a.Add(p.PK, p.EHK, p.Data); err != nil {
				t.Fatalf("prefix: %v", err)
			}
		}
		before := a.Size()
		err := a.Add(r.PK, r.EHK, r.Data)
		want := ErrFull
		if len(prefix) == 0 {
			want = ErrTooLarge
		}
		if !errors.Is(err, want) {
			t.Fatalf("one byte over MaxSize with %d records held: err %v, want %v", len(prefix), err, want)
		}
		if a.Size() != before || a.Len() != len(prefix) {
			t.Fatalf("failed Add changed the state")
		}
		if rec := a.Flush(nil); len(prefix) > 0 {
			checkEmitted(t, cfg, rec, prefix)
		} else if rec.Data != nil {
			t.Fatalf("Flush of an empty aggregator emitted %d bytes", len(rec.Data))
		}
	}
}

func TestErrTooLargeLeavesStateUnchanged(t *testing.T) {
	cfg := AggregatorConfig{MaxSize: 1000}
	a := NewAggregator(cfg)
	held := []in{{"k1", "", []byte("one")}, {"k2", "7", []byte("two")}}
	for _, r := range held {
		if err := a.Add(r.PK, r.EHK, r.Data); err != nil {
			t.Fatal(err)
		}
	}
	size := a.Size()
	// New keys and a big payload: would grow both tables if the failed Add leaked state.
	if err := a.Add("k3", "8", make([]byte, 1000)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err %v, want ErrTooLarge", err)
	}
	if err := a.Add("", "", nil); !errors.Is(err, ErrInvalidPartitionKey) {
		t.Fatalf("err %v, want ErrInvalidPartitionKey", err)
	}
	if err := a.Add("k4", "01", nil); !errors.Is(err, ErrInvalidExplicitHashKey) {
		t.Fatalf("err %v, want ErrInvalidExplicitHashKey", err)
	}
	if a.Size() != size || a.Len() != 2 {
		t.Fatalf("Size %d Len %d after failed Adds, want %d 2", a.Size(), a.Len(), size)
	}
	// The next key must get index 2, not 3 or 4.
	held = append(held, in{"k5", "", []byte("five")})
	if err := a.Add("k5", "", []byte("five")); err != nil {
		t.Fatal(err)
	}
	rec := a.Flush(nil)
	checkEmitted(t, cfg, rec, held)
	if want := sizeWith(t, cfg, held); len(rec.Data)+len(rec.PartitionKey) != want {
		t.Fatalf("emitted %d bytes, a fresh aggregator emits %d", len(rec.Data)+len(rec.PartitionKey), want)
	}
}

func TestMaxRecords(t *testing.T) {
	a := NewAggregator(AggregatorConfig{MaxRecords: 3})
	for i := range 3 {
		if err := a.Add("k", "", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Add("k", "", nil); !errors.Is(err, ErrFull) {
		t.Fatalf("4th record: %v, want ErrFull", err)
	}
	out, _, _ := Deaggregate(a.Flush(nil).Data)
	if len(out) != 3 {
		t.Fatalf("%d records, want 3", len(out))
	}
	if err := a.Add("k", "", nil); err != nil {
		t.Fatalf("after Flush: %v", err)
	}
}

func TestRawSingle(t *testing.T) {
	a := NewAggregator(AggregatorConfig{RawSingle: true, MaxSize: 10})
	// Raw, the record counts 2+8 = 10 bytes; as an aggregate it would not fit.
	if err := a.Add("pk", "99", []byte("12345678")); err != nil {
		t.Fatal(err)
	}
	if a.Size() != 10 {
		t.Fatalf("Size %d, want 10", a.Size())
	}
	if err := a.Add("pk", "", nil); !errors.Is(err, ErrFull) {
		t.Fatalf("second record: %v, want ErrFull", err)
	}
	rec := a.Flush(nil)
	if want := (Record{"pk", "99", []byte("12345678")}); !cmp.Equal(rec, want) {
		t.Fatalf("got %+v, want %+v", rec, want)
	}
	if err := a.Add("pk", "", []byte("123456789")); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("11 bytes raw: %v, want ErrTooLarge", err)
	}

	// Data that is itself a valid aggregate is never emitted raw: consumers would expand it.
	inner := NewAggregator(AggregatorConfig{})
	if err := inner.Add("x", "", []byte("y")); err != nil {
		t.Fatal(err)
	}
	nested := inner.Flush(nil).Data
	a = NewAggregator(AggregatorConfig{RawSingle: true})
	if err := a.Add("pk", "", nested); err != nil {
		t.Fatal(err)
	}
	size := a.Size()
	rec = a.Flush(nil)
	if size != len(rec.Data)+len(rec.PartitionKey) || rec.PartitionKey != "a" {
		t.Fatalf("nested aggregate: Size %d, emitted %q with %d bytes", size, rec.PartitionKey, len(rec.Data))
	}
	out, agg, err := Deaggregate(rec.Data)
	if !agg || err != nil || len(out) != 1 || !bytes.Equal(out[0].Data, nested) {
		t.Fatalf("nested aggregate not wrapped: %t %v %d", agg, err, len(out))
	}
}

func TestOuterKeys(t *testing.T) {
	a := NewAggregator(AggregatorConfig{})
	add := func(pk, ehk string) {
		t.Helper()
		if err := a.Add(pk, ehk, []byte("d")); err != nil {
			t.Fatal(err)
		}
	}
	add("k", "")
	add("k", "5")
	if rec := a.Flush(nil); rec.PartitionKey != "a" || rec.ExplicitHashKey != "" {
		t.Errorf("first record without EHK: outer %q/%q, want a/none", rec.PartitionKey, rec.ExplicitHashKey)
	}
	add("k", "6")
	add("k", "5")
	if rec := a.Flush(nil); rec.ExplicitHashKey != "6" {
		t.Errorf("outer EHK %q, want the first record's 6", rec.ExplicitHashKey)
	}
	a.SetOuterKeys("shard-key", "170141183460469231731687303715884105728")
	add("k", "6")
	size := a.Size()
	rec := a.Flush(nil)
	if rec.PartitionKey != "shard-key" || rec.ExplicitHashKey != "170141183460469231731687303715884105728" || size != len(rec.Data)+len("shard-key") {
		t.Errorf("after SetOuterKeys: %q/%q, size %d", rec.PartitionKey, rec.ExplicitHashKey, size)
	}
	add("k", "")
	if rec := a.Flush(nil); rec.PartitionKey != "shard-key" {
		t.Errorf("outer keys not kept across Flush: %q", rec.PartitionKey)
	}
	add("k", "")
	func() {
		defer func() {
			if recover() == nil {
				t.Error("SetOuterKeys on a non-empty aggregator did not panic")
			}
		}()
		a.SetOuterKeys("x", "")
	}()
	a.Reset()
	a.SetOuterKeys("", "")
	add("k", "")
	if rec := a.Flush(nil); rec.PartitionKey != "a" {
		t.Errorf("SetOuterKeys(\"\", \"\") gave %q, want the default", rec.PartitionKey)
	}
	for _, cfg := range []AggregatorConfig{{MaxSize: -1}, {MaxRecords: -1}, {OuterPartitionKey: strings.Repeat("x", 257)}, {OuterExplicitHashKey: "x"}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewAggregator(%+v) did not panic", cfg)
				}
			}()
			NewAggregator(cfg)
		}()
	}
}

func TestFlushBuffer(t *testing.T) {
	a := NewAggregator(AggregatorConfig{})
	if rec := a.Flush([]byte("junk")); rec.Data != nil || rec.PartitionKey != "" {
		t.Fatalf("empty Flush returned %+v", rec)
	}
	buf := make([]byte, 5, 4096)
	copy(buf, "junk!")
	if err := a.Add("k", "", []byte("payload")); err != nil {
		t.Fatal(err)
	}
	rec := a.Flush(buf)
	if &rec.Data[0] != &buf[:1][0] {
		t.Error("Flush did not write at the start of dst's backing array")
	}
	if !IsAggregated(rec.Data) {
		t.Error("emitted record is not an aggregate")
	}
	// Too small a buffer grows.
	if err := a.Add("k", "", make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if rec := a.Flush(make([]byte, 0, 8)); !IsAggregated(rec.Data) {
		t.Error("emitted record is not an aggregate")
	}
}

func TestKeyValidation(t *testing.T) {
	pks := map[string]bool{
		"":                               false,
		"a":                              true,
		strings.Repeat("x", 256):         true,
		strings.Repeat("x", 257):         false,
		strings.Repeat("é", 256):         true, // 512 bytes, 256 characters
		strings.Repeat("é", 257):         false,
		strings.Repeat("😀", 128):         true, // 256 UTF-16 code units
		strings.Repeat("😀", 129):         false,
		"bad\xffutf8":                    false,
		strings.Repeat("\xff", 10):       false,
		"\x00":                           true,
		strings.Repeat("日", 300)[:3*256]: true,
	}
	for k, want := range pks {
		if got := validPartitionKey(k); got != want {
			t.Errorf("validPartitionKey(%q) = %t, want %t", k, got, want)
		}
	}
	ehks := map[string]bool{
		"0": true, "1": true, "00": false, "01": false, "-1": false, "1.0": false, " 1": false, "": false,
		maxHashKey: true,
		"340282366920938463463374607431768211456":  false, // 2^128
		"999999999999999999999999999999999999999":  false,
		"99999999999999999999999999999999999999":   true,  // 38 digits
		"1000000000000000000000000000000000000000": false, // 40 digits
	}
	for k, want := range ehks {
		if got := validExplicitHashKey(k); got != want {
			t.Errorf("validExplicitHashKey(%q) = %t, want %t", k, got, want)
		}
	}
}

func TestAddZeroAllocsSteadyState(t *testing.T) {
	keys := make([]string, 10000)
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
	}
	payload := make([]byte, 250)
	a := NewAggregator(AggregatorConfig{MaxSize: 64 << 10})
	var buf []byte
	i := 0
	step := func() {
		k := keys[i%len(keys)]
		i++
		if err := a.Add(k, "", payload); errors.Is(err, ErrFull) {
			buf = a.Flush(buf).Data
			if err := a.Add(k, "", payload); err != nil {
				t.Fatal(err)
			}
		} else if err != nil {
			t.Fatal(err)
		}
	}
	for range 5000 { // warm up: buffers and maps reach their working size
		step()
	}
	if allocs := testing.AllocsPerRun(5000, step); allocs != 0 {
		t.Errorf("%v allocations per Add (incl. flushes), want 0", allocs)
	}
}

// Flush into no buffer allocates the record once, at its exact size.
func TestFlushNilAllocatesOnce(t *testing.T) {
	a := NewAggregator(AggregatorConfig{OuterExplicitHashKey: "0"})
	data := make([]byte, 250)
	keys := make([]string, 300)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i)
	}
	fill := func() {
		for _, k := range keys {
			if err := a.Add(k, "", data); err != nil {
				t.Fatal(err)
			}
		}
	}
	fill()
	rec := a.Flush(nil)
	if len(rec.Data) != cap(rec.Data) {
		t.Errorf("record of %d bytes in a buffer of %d", len(rec.Data), cap(rec.Data))
	}
	if n := testing.AllocsPerRun(20, func() {
		a.Reset()
		fill()
		a.Flush(nil)
	}); n > 1 {
		t.Errorf("Add x300 + Flush(nil): %.0f allocations, want 1", n)
	}
}
