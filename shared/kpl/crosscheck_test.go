package kpl

import (
	"bytes"
	"errors"
	"strconv"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/awslabs/kinesis-aggregation/go/v2/deaggregator"
	awsrec "github.com/awslabs/kinesis-aggregation/go/v2/records"
	"github.com/golang/protobuf/proto"
	"github.com/google/go-cmp/cmp"
)

// TestCrossAwslabsDeaggregatesOurs: aggregates written here, read by
// awslabs/kinesis-aggregation's Go de-aggregator (which ignores explicit hash keys), in one batch
// with plain records around them.
func TestCrossAwslabsDeaggregatesOurs(t *testing.T) {
	for seed := range uint64(20) {
		g := newGen(seed + 100)
		g.maxDataLen = 3000
		a := NewAggregator(AggregatorConfig{MaxSize: 20000 + int(seed)*20000})
		outer := "plain-pk"
		batch := []types.Record{{Data: []byte("plain before"), PartitionKey: &outer}}
		type want struct{ pk, data string }
		wants := []want{{outer, "plain before"}}
		flush := func() {
			rec := a.Flush(nil)
			pk := rec.PartitionKey
			batch = append(batch, types.Record{Data: rec.Data, PartitionKey: &pk})
		}
		for range 1 + g.r.IntN(1000) {
			r := g.record()
			err := a.Add(r.PK, r.EHK, r.Data)
			if errors.Is(err, ErrFull) {
				flush()
				err = a.Add(r.PK, r.EHK, r.Data)
			}
			if errors.Is(err, ErrTooLarge) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			wants = append(wants, want{r.PK, string(r.Data)})
		}
		flush()
		batch = append(batch, types.Record{Data: []byte("plain after"), PartitionKey: &outer})
		wants = append(wants, want{outer, "plain after"})

		got, err := deaggregator.DeaggregateRecords(batch)
		if err != nil {
			t.Fatalf("seed %d: awslabs: %v", seed, err)
		}
		if len(got) != len(wants) {
			t.Fatalf("seed %d: awslabs returned %d records, want %d", seed, len(got), len(wants))
		}
		for i, w := range wants {
			if *got[i].PartitionKey != w.pk || string(got[i].Data) != w.data {
				t.Fatalf("seed %d record %d: awslabs gives %q/%d bytes, want %q/%d bytes", seed, i, *got[i].PartitionKey, len(got[i].Data), w.pk, len(w.data))
			}
		}
	}
}

// TestCrossOursDeaggregatesAwslabs: aggregates marshalled by protobuf from awslabs' generated
// AggregatedRecord (with duplicate and unused key table entries, mixed explicit hash keys and
// tags), read here.
func TestCrossOursDeaggregatesAwslabs(t *testing.T) {
	for seed := range uint64(50) {
		g := newGen(seed + 200)
		g.maxDataLen = 2000
		msg := &awsrec.AggregatedRecord{}
		for range 1 + g.r.IntN(300) {
			msg.PartitionKeyTable = append(msg.PartitionKeyTable, g.key())
		}
		for range g.r.IntN(200) {
			msg.ExplicitHashKeyTable = append(msg.ExplicitHashKeyTable, g.hashKey())
		}
		// Duplicate entries are legal: the reader must follow the indices, not the values.
		if len(msg.PartitionKeyTable) > 1 {
			msg.PartitionKeyTable[len(msg.PartitionKeyTable)-1] = msg.PartitionKeyTable[0]
		}
		var want []simple
		for i := range g.r.IntN(500) {
			pki := uint64(g.r.IntN(len(msg.PartitionKeyTable)))
			r := &awsrec.Record{PartitionKeyIndex: &pki, Data: g.data()}
			w := simple{Seq: i, PK: sp(msg.PartitionKeyTable[pki]), Data: string(r.Data)}
			if len(msg.ExplicitHashKeyTable) > 0 && g.r.IntN(2) == 0 {
				ehki := uint64(g.r.IntN(len(msg.ExplicitHashKeyTable)))
				r.ExplicitHashKeyIndex = &ehki
				w.EHK = sp(msg.ExplicitHashKeyTable[ehki])
			}
			if g.r.IntN(10) == 0 {
				k, v := "tag", "value"
				r.Tags = []*awsrec.Tag{{Key: &k, Value: &v}, {Key: &k}}
			}
			msg.Records = append(msg.Records, r)
			want = append(want, w)
		}
		body, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		var d Deaggregator
		out, aggregated, err := d.Deaggregate(nil, frame(body))
		if !aggregated || err != nil {
			t.Fatalf("seed %d: aggregated %t, err %v", seed, aggregated, err)
		}
		if want == nil {
			want = []simple{}
		}
		if diff := cmp.Diff(want, simplify(out)); diff != "" {
			t.Fatalf("seed %d (-want +got):\n%s", seed, diff)
		}
	}
}

// TestEncodingMatchesProtobuf: the protobuf the Aggregator writes is byte for byte what protobuf
// marshals for the same message (tables in first-use order, fields in number order).
func TestEncodingMatchesProtobuf(t *testing.T) {
	for seed := range uint64(30) {
		g := newGen(seed + 300)
		a := NewAggregator(AggregatorConfig{MaxSize: 1 << 26})
		msg := &awsrec.AggregatedRecord{}
		pkIdx, ehkIdx := map[string]uint64{}, map[string]uint64{}
		for range 1 + g.r.IntN(2000) {
			r := g.record()
			if err := a.Add(r.PK, r.EHK, r.Data); err != nil {
				t.Fatal(err)
			}
			pi, ok := pkIdx[r.PK]
			if !ok {
				pi = uint64(len(pkIdx))
				pkIdx[r.PK] = pi
				msg.PartitionKeyTable = append(msg.PartitionKeyTable, r.PK)
			}
			ar := &awsrec.Record{PartitionKeyIndex: &pi, Data: r.Data}
			if r.EHK != "" {
				ei, ok := ehkIdx[r.EHK]
				if !ok {
					ei = uint64(len(ehkIdx))
					ehkIdx[r.EHK] = ei
					msg.ExplicitHashKeyTable = append(msg.ExplicitHashKeyTable, r.EHK)
				}
				ar.ExplicitHashKeyIndex = &ei
			}
			msg.Records = append(msg.Records, ar)
		}
		want, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		got := a.Flush(nil).Data
		if !bytes.Equal(got, frame(want)) {
			t.Fatalf("seed %d: %d bytes written, protobuf frames %d bytes (first difference at %s)", seed, len(got), len(frame(want)), firstDiff(got, frame(want)))
		}
	}
}

func firstDiff(a, b []byte) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return strconv.Itoa(i)
		}
	}
	return "the end of the shorter"
}
