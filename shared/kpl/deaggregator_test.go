package kpl

import (
	"crypto/md5"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protowire"
)

// frame wraps a protobuf body as an aggregated record: magic, body, MD5.
func frame(body []byte) []byte {
	out := append([]byte(Magic), body...)
	sum := md5.Sum(body)
	return append(out, sum[:]...)
}

// pb builds protobuf bytes field by field for hand-made test cases.
type pb []byte

func (p pb) bytes(num protowire.Number, v []byte) pb {
	return protowire.AppendBytes(protowire.AppendTag(p, num, protowire.BytesType), v)
}
func (p pb) str(num protowire.Number, v string) pb { return p.bytes(num, []byte(v)) }
func (p pb) varint(num protowire.Number, v uint64) pb {
	return protowire.AppendVarint(protowire.AppendTag(p, num, protowire.VarintType), v)
}

// rec builds a Record message; ehk < 0 leaves explicit_hash_key_index out.
func rec(pk uint64, ehk int64, data string) pb {
	r := pb(nil).varint(1, pk)
	if ehk >= 0 {
		r = r.varint(2, uint64(ehk))
	}
	return r.str(3, data)
}

// simple is the comparable view of a UserRecord; nil keys stay distinguishable from empty ones.
type simple struct {
	Seq     int
	PK, EHK *string
	Data    string
}

func simplify(rs []UserRecord) []simple {
	out := make([]simple, len(rs))
	for i, r := range rs {
		out[i] = simple{Seq: r.SubSequence, PK: strp(r.PartitionKey), EHK: strp(r.ExplicitHashKey), Data: string(r.Data)}
	}
	return out
}

func strp(b []byte) *string {
	if b == nil {
		return nil
	}
	s := string(b)
	return &s
}

func sp(s string) *string { return &s }

func TestDeaggregateHandBuilt(t *testing.T) {
	// A tag with key and value, and an unknown varint field inside it.
	goodTag := pb(nil).str(1, "k").str(2, "v").varint(9, 1)
	tests := []struct {
		name       string
		body       pb
		aggregated bool
		want       []simple // ignored when !aggregated: the input passes through
		wantErr    *IndexError
	}{
		{
			name:       "records before the tables",
			body:       pb(nil).bytes(3, rec(1, 0, "x")).bytes(3, rec(0, -1, "y")).str(1, "p0").str(2, "9").str(1, "p1"),
			aggregated: true,
			want:       []simple{{0, sp("p1"), sp("9"), "x"}, {1, sp("p0"), nil, "y"}},
		},
		{
			name:       "explicit hash key index out of range after a good record",
			body:       pb(nil).str(1, "p").str(2, "1").bytes(3, rec(0, 0, "a")).bytes(3, rec(0, 1, "b")).bytes(3, rec(0, -1, "c")),
			aggregated: true,
			want:       []simple{{0, sp("p"), sp("1"), "a"}},
			wantErr:    &IndexError{Record: 1, Field: "explicit_hash_key_index", Index: 1, TableLen: 1},
		},
		{
			name:       "explicit hash key index with an empty table",
			body:       pb(nil).str(1, "p").bytes(3, rec(0, 0, "a")),
			aggregated: true,
			want:       []simple{},
			wantErr:    &IndexError{Record: 0, Field: "explicit_hash_key_index", Index: 0, TableLen: 0},
		},
		{
			name:       "partition key index 2^32 (the KCL's int cast would wrap it to 0)",
			body:       pb(nil).str(1, "p").bytes(3, rec(0, -1, "a")).bytes(3, rec(1<<32, -1, "b")),
			aggregated: true,
			want:       []simple{{0, sp("p"), nil, "a"}},
			wantErr:    &IndexError{Record: 1, Field: "partition_key_index", Index: 1 << 32, TableLen: 1},
		},
		{
			name:       "parse error after an index error: pass-through",
			body:       pb(nil).str(1, "p").bytes(3, rec(7, -1, "a")).bytes(3, pb(nil).str(3, "no pk index")),
			aggregated: false,
		},
		{
			name:       "parse error after good records: pass-through",
			body:       pb(nil).str(1, "p").bytes(3, rec(0, -1, "a")).bytes(3, rec(0, -1, "b")).bytes(3, pb{0x08}),
			aggregated: false,
		},
		{
			name:       "record without data",
			body:       pb(nil).str(1, "p").bytes(3, pb(nil).varint(1, 0)),
			aggregated: false,
		},
		{
			name:       "partition_key_index with the wrong wire type is an unknown field, so missing",
			body:       pb(nil).str(1, "p").bytes(3, pb(nil).bytes(1, []byte{0}).str(3, "d")),
			aggregated: false,
		},
		{
			name:       "top-level field with the wrong wire type is skipped",
			body:       pb(nil).str(1, "p").varint(1, 5).varint(3, 1).bytes(3, rec(0, -1, "d")),
			aggregated: true,
			want:       []simple{{0, sp("p"), nil, "d"}},
		},
		{
			name:       "tag without key: pass-through",
			body:       pb(nil).str(1, "p").bytes(3, rec(0, -1, "d").bytes(4, pb(nil).str(2, "v"))),
			aggregated: false,
		},
		{
			name:       "malformed tag: pass-through",
			body:       pb(nil).str(1, "p").bytes(3, rec(0, -1, "d").bytes(4, pb{0x0a, 0x05, 'k'})),
			aggregated: false,
		},
		{
			name:       "good tags and unknown fields everywhere",
			body:       pb(nil).varint(15, 1).str(1, "p").bytes(3, rec(0, -1, "d").bytes(4, goodTag).bytes(4, goodTag).varint(20, 3)).str(99, "x"),
			aggregated: true,
			want:       []simple{{0, sp("p"), nil, "d"}},
		},
		{
			name: "unknown group at top level and in a record",
			body: append(append(pb(nil).str(1, "p"), protowire.AppendGroup(protowire.AppendTag(nil, 7, protowire.StartGroupType), 7, pb(nil).varint(1, 1))...),
				pb(nil).bytes(3, append(rec(0, -1, "d"), protowire.AppendGroup(protowire.AppendTag(nil, 8, protowire.StartGroupType), 8, nil)...))...),
			aggregated: true,
			want:       []simple{{0, sp("p"), nil, "d"}},
		},
		{
			name:       "stray end-group tag: pass-through",
			body:       append(pb(nil).str(1, "p").bytes(3, rec(0, -1, "d")), protowire.AppendTag(nil, 7, protowire.EndGroupType)...),
			aggregated: false,
		},
		{
			name:       "repeated singular fields: the last one wins",
			body:       pb(nil).str(1, "p0").str(1, "p1").bytes(3, rec(0, -1, "first").varint(1, 1).str(3, "second")),
			aggregated: true,
			want:       []simple{{0, sp("p1"), nil, "second"}},
		},
		{
			name:       "empty keys are present, not absent; explicit hash key index 0 is present",
			body:       pb(nil).str(1, "").str(2, "").bytes(3, rec(0, 0, "")).bytes(3, rec(0, -1, "")),
			aggregated: true,
			want:       []simple{{0, sp(""), sp(""), ""}, {1, sp(""), nil, ""}},
		},
		{
			name:       "duplicate and unused table entries",
			body:       pb(nil).str(1, "k").str(1, "k").str(1, "unused").bytes(3, rec(1, -1, "a")).bytes(3, rec(0, -1, "b")),
			aggregated: true,
			want:       []simple{{0, sp("k"), nil, "a"}, {1, sp("k"), nil, "b"}},
		},
		{
			name:       "empty protobuf (only possible with 16+ bytes of digest): zero records",
			body:       pb(nil).varint(100, 1),
			aggregated: true,
			want:       []simple{},
		},
		{
			name:       "key table entry overruns the message",
			body:       pb{0x0a, 0x7f, 'a', 'b'},
			aggregated: false,
		},
		{
			name:       "field number 0",
			body:       pb{0x00, 0x00},
			aggregated: false,
		},
		{
			name:       "field number 2^29 (above the protobuf maximum)",
			body:       protowire.AppendVarint(protowire.AppendTag(pb(nil).str(1, "p").bytes(3, rec(0, -1, "d")), 1<<29, protowire.VarintType), 0),
			aggregated: false,
		},
		{
			name:       "field number 2^29 inside a record",
			body:       pb(nil).str(1, "p").bytes(3, protowire.AppendVarint(protowire.AppendTag(rec(0, -1, "d"), 1<<29, protowire.VarintType), 0)),
			aggregated: false,
		},
		{
			name:       "field number 2^29-1 is valid",
			body:       protowire.AppendVarint(protowire.AppendTag(pb(nil).str(1, "p").bytes(3, rec(0, -1, "d")), 1<<29-1, protowire.VarintType), 0),
			aggregated: true,
			want:       []simple{{0, sp("p"), nil, "d"}},
		},
		{
			name:       "reserved wire type 6",
			body:       pb{0x0e, 0x00},
			aggregated: false,
		},
		{
			name:       "11-byte varint index",
			body:       append(pb(nil).str(1, "p"), pb(nil).bytes(3, append(pb{0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, pb(nil).str(3, "d")...))...),
			aggregated: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := frame(tt.body)
			var d Deaggregator
			out, aggregated, err := d.Deaggregate(nil, data)
			if aggregated != tt.aggregated {
				t.Fatalf("aggregated = %t, want %t (err %v, %d records)", aggregated, tt.aggregated, err, len(out))
			}
			if IsAggregated(data) != tt.aggregated {
				t.Errorf("IsAggregated disagrees")
			}
			if !tt.aggregated {
				if err != nil || len(out) != 1 || out[0].PartitionKey != nil || string(out[0].Data) != string(data) {
					t.Fatalf("want one pass-through record, got %+v, %v", out, err)
				}
				return
			}
			if diff := cmp.Diff(tt.want, simplify(out)); diff != "" {
				t.Errorf("records (-want +got):\n%s", diff)
			}
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			var ie *IndexError
			if !errors.As(err, &ie) || *ie != *tt.wantErr {
				t.Fatalf("err = %#v, want %#v", err, tt.wantErr)
			}
		})
	}
}

func TestDeaggregateAliasesInputWithClippedCapacity(t *testing.T) {
	body := pb(nil).str(1, "pk").str(2, "12").bytes(3, rec(0, 0, "hello")).bytes(3, rec(0, -1, "world"))
	data := frame(body)
	orig := append([]byte(nil), data...)
	out, aggregated, err := Deaggregate(data)
	if !aggregated || err != nil || len(out) != 2 {
		t.Fatalf("got %d records, %t, %v", len(out), aggregated, err)
	}
	inInput := func(b []byte) bool {
		return len(b) > 0 && cap(b) == len(b) && uintptrIn(&b[0], data)
	}
	for i, r := range out {
		for _, f := range [][]byte{r.PartitionKey, r.Data} {
			if !inInput(f) {
				t.Errorf("record %d: field %q does not alias the input with clipped capacity", i, f)
			}
		}
		// Appending must reallocate, not overwrite the bytes after the field.
		_ = append(r.Data, 'X')
		_ = append(r.PartitionKey, 'X')
	}
	if !inInput(out[0].ExplicitHashKey) {
		t.Errorf("explicit hash key does not alias the input")
	}
	if string(data) != string(orig) {
		t.Fatal("input modified")
	}
}

// uintptrIn reports whether p points into b.
func uintptrIn(p *byte, b []byte) bool {
	for i := range b {
		if &b[i] == p {
			return true
		}
	}
	return false
}

func TestDeaggregateZeroAllocs(t *testing.T) {
	a := NewAggregator(AggregatorConfig{})
	for i := range 300 {
		ehk := ""
		if i%3 == 0 {
			ehk = "1234567890"
		}
		if err := a.Add("key-"+string(rune('a'+i%26)), ehk, make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
	}
	data := a.Flush(nil).Data
	var d Deaggregator
	dst := make([]UserRecord, 0, 300)
	if _, agg, err := d.Deaggregate(dst, data); !agg || err != nil {
		t.Fatal(agg, err)
	}
	allocs := testing.AllocsPerRun(20, func() {
		out, _, _ := d.Deaggregate(dst[:0], data)
		if len(out) != 300 {
			t.Fatal(len(out))
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per Deaggregate, want 0", allocs)
	}
}

func TestTagConstants(t *testing.T) {
	for _, c := range []struct {
		got  uint64
		num  protowire.Number
		typ  protowire.Type
		name string
	}{
		{tagPartitionKeyTable, 1, protowire.BytesType, "partition_key_table"},
		{tagExplicitHashKeyTable, 2, protowire.BytesType, "explicit_hash_key_table"},
		{tagRecords, 3, protowire.BytesType, "records"},
		{tagPartitionKeyIndex, 1, protowire.VarintType, "partition_key_index"},
		{tagExplicitHashKeyIndex, 2, protowire.VarintType, "explicit_hash_key_index"},
		{tagData, 3, protowire.BytesType, "data"},
		{tagTags, 4, protowire.BytesType, "tags"},
		{tagTagKey, 1, protowire.BytesType, "key"},
	} {
		if want := protowire.EncodeTag(c.num, c.typ); c.got != want || protowire.SizeVarint(want) != 1 {
			t.Errorf("%s: tag %#x, want %#x (one byte)", c.name, c.got, want)
		}
	}
}

func TestNotAggregatedFraming(t *testing.T) {
	good := frame(pb(nil).str(1, "p").bytes(3, rec(0, -1, "d")))
	cases := map[string][]byte{
		"nil":                   nil,
		"3 magic bytes":         []byte(Magic[:3]),
		"magic + 16 zero bytes": append([]byte(Magic), make([]byte, 16)...),
		"wrong magic":           append([]byte{0xf3, 0x89, 0x9a, 0xc3}, good[4:]...),
		"digest off by one":     append(append([]byte(nil), good[:len(good)-1]...), good[len(good)-1]^1),
		"body byte flipped":     append(append(append([]byte(nil), good[:5]...), good[5]^0x40), good[6:]...),
		"extra byte appended":   append(append([]byte(nil), good...), 0),
		"magic + MD5 of empty":  frame(nil),
	}
	for name, data := range cases {
		out, agg, err := Deaggregate(data)
		if agg || err != nil || len(out) != 1 || len(out[0].Data) != len(data) || out[0].PartitionKey != nil {
			t.Errorf("%s: got %+v, %t, %v; want one pass-through record", name, out, agg, err)
		}
	}
	if out, agg, err := Deaggregate(good); !agg || err != nil || len(out) != 1 {
		t.Fatalf("control case not aggregated: %t %v", agg, err)
	}
}
