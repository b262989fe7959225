package kpl

import (
	"bytes"
	"encoding/base64"
	"errors"
	"testing"

	"github.com/nsqk/nsqk/shared/kpl/kpltest"
)

// checkAgainstExpect compares de-aggregated records with a vector's expect.records.
func checkAgainstExpect(t *testing.T, v kpltest.Vector, input []byte, got []UserRecord) {
	t.Helper()
	want := v.Expect.Records
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		wantData, err := base64.StdEncoding.DecodeString(w.DataBase64)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(g.Data, wantData) {
			t.Errorf("record %d: data %q, want %q", i, g.Data, wantData)
		}
		if !v.Expect.Aggregated {
			// Pass-through: the expected key is the outer one, which the caller keeps.
			if g.PartitionKey != nil || g.ExplicitHashKey != nil || g.SubSequence != 0 {
				t.Errorf("pass-through record %d has keys or subsequence: %+v", i, g)
			}
			if len(input) > 0 && &g.Data[0] != &input[0] || len(g.Data) != len(input) {
				t.Errorf("pass-through data is not the input itself")
			}
			if (w.PartitionKey == nil) != (v.OuterPartitionKey == nil) ||
				w.PartitionKey != nil && *w.PartitionKey != *v.OuterPartitionKey || w.ExplicitHashKey != nil {
				t.Errorf("vector's pass-through keys are not the outer ones: %+v", w)
			}
			continue
		}
		if g.SubSequence != i {
			t.Errorf("record %d: SubSequence %d", i, g.SubSequence)
		}
		if w.PartitionKey == nil || g.PartitionKey == nil || string(g.PartitionKey) != *w.PartitionKey {
			t.Errorf("record %d: partition key %q, want %v", i, g.PartitionKey, show(w.PartitionKey))
		}
		if (g.ExplicitHashKey == nil) != (w.ExplicitHashKey == nil) ||
			w.ExplicitHashKey != nil && string(g.ExplicitHashKey) != *w.ExplicitHashKey {
			t.Errorf("record %d: explicit hash key %q (nil=%t), want %v", i, g.ExplicitHashKey, g.ExplicitHashKey == nil, show(w.ExplicitHashKey))
		}
	}
}

func show(s *string) string {
	if s == nil {
		return "null"
	}
	return "\"" + *s + "\""
}

func TestVectors(t *testing.T) {
	var d Deaggregator // reused across vectors, as a consumer does
	var dst []UserRecord
	for _, v := range kpltest.Load(t) {
		t.Run(v.Name, func(t *testing.T) {
			data := v.Data(t)
			// A non-empty dst prefix must be kept as is.
			prefix := UserRecord{SubSequence: -1, Data: []byte("prefix")}
			dst = append(dst[:0], prefix)
			out, aggregated, err := d.Deaggregate(dst, data)
			if aggregated != v.Expect.Aggregated {
				t.Fatalf("aggregated = %t, want %t", aggregated, v.Expect.Aggregated)
			}
			if got := IsAggregated(data); got != v.Expect.Aggregated {
				t.Errorf("IsAggregated = %t, want %t", got, v.Expect.Aggregated)
			}
			if (err != nil) != !v.Expect.Valid {
				t.Fatalf("err = %v, want error: %t", err, !v.Expect.Valid)
			}
			if err != nil {
				var ie *IndexError
				if !errors.As(err, &ie) {
					t.Fatalf("error %T %v is not an *IndexError", err, err)
				}
				if ie.Record != len(v.Expect.Records) {
					t.Errorf("IndexError.Record = %d, want %d (records before the fault)", ie.Record, len(v.Expect.Records))
				}
			}
			if len(out) == 0 || out[0].SubSequence != -1 || string(out[0].Data) != "prefix" {
				t.Fatalf("dst prefix lost: %+v", out)
			}
			checkAgainstExpect(t, v, data, out[1:])

			// The convenience function agrees.
			recs, agg2, err2 := Deaggregate(data)
			if agg2 != aggregated || (err2 == nil) != (err == nil) || len(recs) != len(out)-1 {
				t.Errorf("Deaggregate(data) = %d records, %t, %v; method gave %d, %t, %v", len(recs), agg2, err2, len(out)-1, aggregated, err)
			}
			dst = out
		})
	}
}

// TestVectorIndexError pins the fields of the IndexError for the one such vector.
func TestVectorIndexError(t *testing.T) {
	for _, v := range kpltest.Load(t) {
		if v.Name != "edge/pk-index-out-of-range" {
			continue
		}
		_, _, err := Deaggregate(v.Data(t))
		want := &IndexError{Record: 0, Field: "partition_key_index", Index: 5, TableLen: 1}
		var ie *IndexError
		if !errors.As(err, &ie) || *ie != *want {
			t.Fatalf("err = %#v, want %#v", err, want)
		}
		if got := err.Error(); got != "kpl: record 0: partition_key_index 5 out of range (table has 1 entries)" {
			t.Errorf("message %q", got)
		}
		return
	}
	t.Fatal("vector edge/pk-index-out-of-range not found")
}
