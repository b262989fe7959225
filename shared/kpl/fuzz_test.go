package kpl

import (
	"bytes"
	"crypto/md5"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	awsrec "github.com/awslabs/kinesis-aggregation/go/v2/records"
	"github.com/golang/protobuf/proto"
	"github.com/google/go-cmp/cmp"

	"github.com/nsqk/nsqk/shared/kpl/kpltest"
)

// FuzzDeaggregate checks, on any input: no panic; the pass-through contract; agreement with
// IsAggregated; agreement with protobuf's own parser of awslabs' generated (proto2, required
// fields) AggregatedRecord; and that re-aggregating the records of a clean aggregate and reading
// them back gives the same records.
//
// A mutated aggregate almost never keeps a valid MD5, so on its own the fuzzer would only explore
// the framing checks: an input that starts with the magic is therefore also checked with its
// digest recomputed, which lets every mutation of the protobuf reach the parser.
func FuzzDeaggregate(f *testing.F) {
	// The seed corpus is testdata/fuzz/FuzzDeaggregate (see TestFuzzCorpus).
	var d Deaggregator
	dst := make([]UserRecord, 0, 16)
	f.Fuzz(func(t *testing.T, data []byte) {
		dst = checkDeaggregate(t, &d, dst, data)
		if len(data) > len(Magic)+md5.Size && bytes.HasPrefix(data, []byte(Magic)) {
			dst = checkDeaggregate(t, &d, dst, frame(data[len(Magic):len(data)-md5.Size]))
		}
	})
}

func checkDeaggregate(t *testing.T, d *Deaggregator, dst []UserRecord, data []byte) []UserRecord {
	orig := bytes.Clone(data)
	prefix := UserRecord{SubSequence: -7}
	all, aggregated, err := d.Deaggregate(append(dst[:0], prefix), data)
	if !bytes.Equal(data, orig) {
		t.Fatal("input modified")
	}
	if len(all) == 0 || all[0].SubSequence != -7 {
		t.Fatal("dst prefix lost")
	}
	out := all[1:]
	if IsAggregated(data) != aggregated {
		t.Fatalf("IsAggregated = %t, Deaggregate says %t", !aggregated, aggregated)
	}
	if !aggregated {
		if err != nil || len(out) != 1 || out[0].PartitionKey != nil || out[0].ExplicitHashKey != nil ||
			!bytes.Equal(out[0].Data, data) || len(out[0].Data) != len(data) {
			t.Fatalf("not aggregated: want one pass-through record, got %d records, err %v", len(out), err)
		}
	}

	// Oracle: protobuf-go on the generated message, with the framing rules.
	msg, parsed := referenceParse(data)
	if parsed != aggregated {
		t.Fatalf("aggregated = %t, protobuf parse says %t", aggregated, parsed)
	}
	if aggregated {
		want, wantErr := referenceExpand(msg)
		if diff := cmp.Diff(want, simplify(out)); diff != "" {
			t.Fatalf("records differ from protobuf's (-want +got):\n%s", diff)
		}
		if (err != nil) != (wantErr != nil) || err != nil && err.Error() != wantErr.Error() {
			t.Fatalf("err = %v, want %v", err, wantErr)
		}
	}

	if !aggregated || err != nil || len(out) == 0 {
		return all
	}
	// Re-aggregate: same keys, same explicit hash key presence, same order.
	a := NewAggregator(AggregatorConfig{MaxSize: math.MaxInt32})
	for _, r := range out {
		if err := a.add(string(r.PartitionKey), string(r.ExplicitHashKey), r.ExplicitHashKey != nil, r.Data); err != nil {
			t.Fatalf("re-aggregating: %v", err)
		}
	}
	again, aggregated2, err2 := Deaggregate(a.Flush(nil).Data)
	if !aggregated2 || err2 != nil {
		t.Fatalf("re-aggregated record: aggregated %t, err %v", aggregated2, err2)
	}
	if diff := cmp.Diff(simplify(out), simplify(again)); diff != "" {
		t.Fatalf("round trip (-first +second):\n%s", diff)
	}
	return all
}

// referenceParse applies the framing rules and protobuf's parser (which enforces proto2 required
// fields, recursively).
func referenceParse(data []byte) (*awsrec.AggregatedRecord, bool) {
	if len(data) <= len(Magic)+md5.Size || !bytes.HasPrefix(data, []byte(Magic)) {
		return nil, false
	}
	body := data[len(Magic) : len(data)-md5.Size]
	if sum := md5.Sum(body); !bytes.Equal(sum[:], data[len(data)-md5.Size:]) {
		return nil, false
	}
	msg := &awsrec.AggregatedRecord{}
	if err := proto.Unmarshal(body, msg); err != nil {
		return nil, false
	}
	return msg, true
}

func referenceExpand(msg *awsrec.AggregatedRecord) ([]simple, error) {
	out := []simple{}
	for i, r := range msg.Records {
		pki := r.GetPartitionKeyIndex()
		if pki >= uint64(len(msg.PartitionKeyTable)) {
			return out, &IndexError{Record: i, Field: "partition_key_index", Index: pki, TableLen: len(msg.PartitionKeyTable)}
		}
		s := simple{Seq: i, PK: sp(msg.PartitionKeyTable[pki]), Data: string(r.Data)}
		if r.ExplicitHashKeyIndex != nil {
			ei := *r.ExplicitHashKeyIndex
			if ei >= uint64(len(msg.ExplicitHashKeyTable)) {
				return out, &IndexError{Record: i, Field: "explicit_hash_key_index", Index: ei, TableLen: len(msg.ExplicitHashKeyTable)}
			}
			s.EHK = sp(msg.ExplicitHashKeyTable[ei])
		}
		out = append(out, s)
	}
	return out, nil
}

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzDeaggregate seeds (vectors + generated)")

const corpusDir = "testdata/fuzz/FuzzDeaggregate"

// corpusSeeds are the checked-in seeds: every vector, and aggregates made here that cover what
// the vectors do not (records before tables, tags, groups, empty keys, multi-byte varints).
func corpusSeeds(t *testing.T) map[string][]byte {
	seeds := map[string][]byte{}
	unsafe := regexp.MustCompile(`[^a-zA-Z0-9._-]+`)
	for _, v := range kpltest.Load(t) {
		seeds["vector-"+unsafe.ReplaceAllString(v.Name, "_")] = v.Data(t)
	}
	for i, cfg := range []struct {
		n, maxData int
		seed       uint64
	}{{1, 10, 1}, {3, 50, 2}, {20, 300, 3}, {150, 40, 4}, {2, 200, 5}} {
		g := newGen(cfg.seed + 1000)
		g.maxDataLen = cfg.maxData
		a := NewAggregator(AggregatorConfig{})
		for range cfg.n {
			r := g.record()
			r.Data = r.Data[:min(len(r.Data), cfg.maxData)]
			if err := a.Add(r.PK, r.EHK, r.Data); err != nil {
				t.Fatal(err)
			}
		}
		seeds["gen-aggregator-"+strconv.Itoa(i)] = a.Flush(nil).Data
	}
	tag := pb(nil).str(1, "k").str(2, "v")
	seeds["gen-records-before-tables"] = frame(pb(nil).bytes(3, rec(1, 0, "x")).bytes(3, rec(0, -1, "y")).str(1, "p0").str(2, "9").str(1, "p1"))
	seeds["gen-tags-unknown-fields"] = frame(pb(nil).varint(15, 1).str(1, "p").bytes(3, rec(0, -1, "d").bytes(4, tag).varint(20, 3)).str(99, "x"))
	seeds["gen-empty-keys-ehk-index-0"] = frame(pb(nil).str(1, "").str(2, "").bytes(3, rec(0, 0, "")).bytes(3, rec(0, -1, "")))
	seeds["gen-ehk-index-out-of-range"] = frame(pb(nil).str(1, "p").str(2, "1").bytes(3, rec(0, 0, "a")).bytes(3, rec(0, 1, "b")))
	seeds["gen-group"] = frame(append(pb(nil).str(1, "p").bytes(3, rec(0, -1, "d")), 0x3b, 0x08, 0x01, 0x3c))
	seeds["gen-tag-without-key"] = frame(pb(nil).str(1, "p").bytes(3, rec(0, -1, "d").bytes(4, pb(nil).str(2, "v"))))
	return seeds
}

// TestFuzzCorpus keeps the checked-in seed corpus complete: every seed must be there, byte for
// byte. Run with -update-corpus to rewrite it (crashers the fuzzer adds are left alone).
func TestFuzzCorpus(t *testing.T) {
	seeds := corpusSeeds(t)
	if *updateCorpus {
		if err := os.MkdirAll(corpusDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range seeds {
			content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			if err := os.WriteFile(filepath.Join(corpusDir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, b := range seeds {
		raw, err := os.ReadFile(filepath.Join(corpusDir, name))
		if err != nil {
			t.Errorf("seed %s missing (go test -run TestFuzzCorpus -update-corpus): %v", name, err)
			continue
		}
		lines := strings.SplitN(string(raw), "\n", 3)
		if len(lines) < 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
			t.Errorf("seed %s: not in the go test fuzz v1 format", name)
			continue
		}
		got, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil || got != string(b) {
			t.Errorf("seed %s is stale (go test -run TestFuzzCorpus -update-corpus): %v", name, err)
		}
	}
}
