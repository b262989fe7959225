package kpl

import (
	"crypto/md5"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/awslabs/kinesis-aggregation/go/v2/deaggregator"
	awsrec "github.com/awslabs/kinesis-aggregation/go/v2/records"
	"github.com/golang/protobuf/proto"
)

const (
	benchPayload   = 250
	benchKeyPool   = 100_000
	benchKeyLen    = 10
	benchAggrCount = 500
)

var (
	sinkRecords []UserRecord
	sinkKinesis []types.Record
	sinkRecord  Record
	sinkSum     [md5.Size]byte
)

// benchKeys returns n random 10-character alphanumeric keys (nearly all distinct).
func benchKeys(n int) []string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	r := rand.New(rand.NewPCG(1, 2))
	keys := make([]string, n)
	b := make([]byte, benchKeyLen)
	for i := range keys {
		for j := range b {
			b[j] = alphabet[r.IntN(len(alphabet))]
		}
		keys[i] = string(b)
	}
	return keys
}

func benchPayloadBytes() []byte {
	p := make([]byte, benchPayload)
	for i := range p {
		p[i] = byte(i * 7)
	}
	return p
}

// benchAdd adds one record; when the aggregate is full, empty (Reset or Flush) makes room first.
func benchAdd(b *testing.B, a *Aggregator, key string, payload []byte, empty func()) {
	err := a.Add(key, "", payload)
	if errors.Is(err, ErrFull) {
		empty()
		err = a.Add(key, "", payload)
	}
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAggregatorAdd is the cost of Add alone: on ErrFull the aggregator is Reset (what Flush
// does after writing), so the copy and MD5 of Flush are left out; see BenchmarkAggregate.
func BenchmarkAggregatorAdd(b *testing.B) {
	keys, payload := benchKeys(benchKeyPool), benchPayloadBytes()
	a := NewAggregator(AggregatorConfig{})
	b.ReportAllocs()
	b.SetBytes(benchPayload)
	b.ResetTimer()
	for i := range b.N {
		benchAdd(b, a, keys[i%len(keys)], payload, a.Reset)
	}
}

// BenchmarkAggregate is the amortised cost per user record of Add plus Flush (concatenation,
// MD5 of the ~1 MiB output, copy into a reused buffer).
func BenchmarkAggregate(b *testing.B) {
	keys, payload := benchKeys(benchKeyPool), benchPayloadBytes()
	a := NewAggregator(AggregatorConfig{})
	var buf []byte
	out := 0 // bytes emitted, to size the MD5 share: MD5 ns/byte (BenchmarkMD5) x out-B/record
	b.ReportAllocs()
	b.SetBytes(benchPayload)
	b.ResetTimer()
	for i := range b.N {
		benchAdd(b, a, keys[i%len(keys)], payload, func() {
			sinkRecord = a.Flush(buf)
			buf = sinkRecord.Data
			out += len(buf)
		})
	}
	b.ReportMetric(float64(out)/float64(b.N), "out-B/record")
}

// BenchmarkMD5 is the floor under Flush and Deaggregate: crypto/md5 per byte.
func BenchmarkMD5(b *testing.B) {
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	for range b.N {
		sinkSum = md5.Sum(buf)
	}
}

// benchAggregate is a 500-record aggregate of 250-byte records with distinct 10-character keys.
func benchAggregate(b *testing.B) []byte {
	keys, payload := benchKeys(benchAggrCount), benchPayloadBytes()
	a := NewAggregator(AggregatorConfig{})
	for _, k := range keys {
		if err := a.Add(k, "", payload); err != nil {
			b.Fatal(err)
		}
	}
	return a.Flush(nil).Data
}

func reportRecords(b *testing.B, perOp int) {
	b.ReportMetric(float64(b.N)*float64(perOp)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkDeaggregate compares this package with awslabs/kinesis-aggregation on the same
// aggregate, both verifying the MD5 (full), and without it (parse-only: what each does after the
// digest check). Each iteration starts from the raw bytes: nothing is cached across iterations.
func BenchmarkDeaggregate(b *testing.B) {
	data := benchAggregate(b)
	body := data[len(Magic) : len(data)-md5.Size]
	outerPK := "a"

	b.Run("nsqk", func(b *testing.B) {
		var d Deaggregator
		dst := make([]UserRecord, 0, benchAggrCount)
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for range b.N {
			out, agg, err := d.Deaggregate(dst[:0], data)
			if !agg || err != nil || len(out) != benchAggrCount {
				b.Fatal(agg, err, len(out))
			}
			sinkRecords = out
		}
		reportRecords(b, benchAggrCount)
	})
	b.Run("awslabs", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for range b.N {
			out, err := deaggregator.DeaggregateRecords([]types.Record{{Data: data, PartitionKey: &outerPK}})
			if err != nil || len(out) != benchAggrCount {
				b.Fatal(err, len(out))
			}
			sinkKinesis = out
		}
		reportRecords(b, benchAggrCount)
	})
	b.Run("nsqk-parse-only", func(b *testing.B) {
		var d Deaggregator
		dst := make([]UserRecord, 0, benchAggrCount)
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for range b.N {
			if !d.scan(body) {
				b.Fatal("scan")
			}
			out, ok, err := d.expand(dst[:0], body, true)
			if !ok || err != nil || len(out) != benchAggrCount {
				b.Fatal(ok, err, len(out))
			}
			sinkRecords = out
		}
		reportRecords(b, benchAggrCount)
	})
	b.Run("awslabs-parse-only", func(b *testing.B) {
		// DeaggregateRecords after its digest check: proto.Unmarshal, then one types.Record per
		// user record as its createUserRecord builds them.
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		src := types.Record{Data: data, PartitionKey: &outerPK}
		for range b.N {
			msg := &awsrec.AggregatedRecord{}
			if err := proto.Unmarshal(body, msg); err != nil {
				b.Fatal(err)
			}
			out := make([]types.Record, 0)
			for _, r := range msg.Records {
				pk := msg.PartitionKeyTable[*r.PartitionKeyIndex]
				out = append(out, types.Record{
					ApproximateArrivalTimestamp: src.ApproximateArrivalTimestamp,
					Data:                        r.Data,
					EncryptionType:              src.EncryptionType,
					PartitionKey:                &pk,
					SequenceNumber:              src.SequenceNumber,
				})
			}
			sinkKinesis = out
		}
		reportRecords(b, benchAggrCount)
	})
	b.Run("md5-only", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for range b.N {
			sinkSum = md5.Sum(body)
		}
		reportRecords(b, benchAggrCount)
	})
}
