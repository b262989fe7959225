package nullsink

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/shardmap"
)

// putRecordsBody builds the JSON body the SDK sends for entries aggregates of per records each,
// one per shard of a 4-shard stream, as the bridge builds them.
func putRecordsBody(b *testing.B, entries, per int) ([]byte, []uint64) {
	msgs, expect := generate(entries*per*4, 100000)
	m, _ := shardmap.New(ShardRanges(4))
	aggs := make([]*kpl.Aggregator, 4)
	var recs []types.PutRecordsRequestEntry
	for i := range aggs {
		aggs[i] = kpl.NewAggregator(kpl.AggregatorConfig{OuterExplicitHashKey: m.Shards()[i].StartKey})
	}
	n := 0
	for _, g := range msgs {
		sh := m.Lookup(shardmap.HashKey(g.user))
		if aggs[sh].Len() == per {
			continue
		}
		aggs[sh].Add(g.user, "", g.body)
		n++
	}
	for _, a := range aggs {
		r := a.Flush(nil)
		recs = append(recs, types.PutRecordsRequestEntry{Data: r.Data, PartitionKey: aws.String(r.PartitionKey), ExplicitHashKey: aws.String(r.ExplicitHashKey)})
	}
	var buf bytes.Buffer
	buf.WriteString(`{"Records":[`)
	for i, r := range recs {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString(`{"Data":"` + b64(r.Data) + `","ExplicitHashKey":"` + *r.ExplicitHashKey + `","PartitionKey":"` + *r.PartitionKey + `"}`)
	}
	buf.WriteString(`],"StreamName":"nsqk-bench"}`)
	_ = n
	return buf.Bytes(), expect
}

// BenchmarkPutRecords is the sink's cost per user record for requests of 4 aggregates.
func BenchmarkPutRecords(b *testing.B) {
	for _, per := range []int{8, 500} {
		b.Run(map[int]string{8: "8-per-record", 500: "500-per-record"}[per], func(b *testing.B) {
			body, _ := putRecordsBody(b, 1, per)
			s := New(Config{Stream: "nsqk-bench", Shards: 4, Verifier: NewVerifier(nil)})
			h := s.Handler()
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			for range b.N {
				req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
				req.Header.Set("X-Amz-Target", "Kinesis_20131202.PutRecords")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatal(w.Body.String())
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*4*per), "ns/record")
		})
	}
}

func b64(d []byte) string { return base64.StdEncoding.EncodeToString(d) }
