package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/location"
	"github.com/nsqk/nsqk/shared/logread"
)

// benchAggregates builds n aggregates of perAgg location messages (what the bridge writes).
func benchAggregates(n, perAgg int) []types.Record {
	gen := location.NewGenerator(100_000, 1)
	agg := kpl.NewAggregator(kpl.AggregatorConfig{OuterPartitionKey: "0"})
	recs := make([]types.Record, n)
	arrival := time.Now()
	for i := range recs {
		for range perAgg {
			body, user, _ := gen.Next(nil)
			if err := agg.Add(user, "", body); err != nil {
				panic(err)
			}
		}
		r := agg.Flush(nil)
		recs[i] = types.Record{Data: r.Data, PartitionKey: aws.String(r.PartitionKey),
			SequenceNumber: aws.String("49590338271490256608559692538361571095921575989136588898"), ApproximateArrivalTimestamp: &arrival}
	}
	return recs
}

const benchPerAgg = 100

// BenchmarkTailExpandJSON is tail's own cost per user record: de-aggregate and print JSON
// (buffered, to io.Discard), without reading. Compare with BenchmarkDecode.
func BenchmarkTailExpandJSON(b *testing.B) {
	recs := benchAggregates(100, benchPerAgg)
	bw := bufio.NewWriterSize(io.Discard, 1<<16)
	var x logread.Expander
	var buf []byte
	emit := func(r *logread.Record) error {
		buf = logread.AppendJSON(buf[:0], r)
		_, err := bw.Write(buf)
		return err
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	users := 0
	for i := 0; i < b.N; i++ {
		n, _, _ := x.Expand("shardId-000000000000", &recs[i%len(recs)], nil, emit)
		users += n
	}
	reportPerUser(b, users, cpu)
}

// BenchmarkDecode is `nsqk decode`'s cost per user record on the same aggregates (one base64
// line each, JSON out to io.Discard).
func BenchmarkDecode(b *testing.B) {
	recs := benchAggregates(100, benchPerAgg)
	var in bytes.Buffer
	for _, r := range recs {
		in.WriteString(base64.StdEncoding.EncodeToString(r.Data))
		in.WriteByte('\n')
	}
	lines := in.Bytes()
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	// One iteration = one pass over the 100 lines.
	for i := 0; i < b.N; i++ {
		if err := runDecode(bytes.NewReader(lines), io.Discard); err != nil {
			b.Fatal(err)
		}
	}
	reportPerUser(b, b.N*len(recs)*benchPerAgg, cpu)
}

// BenchmarkTailFromKinesalite is `nsqk tail` end to end on a local stream: GetRecords from
// kinesalite (another process), de-aggregate, JSON to io.Discard. One iteration reads the whole
// stream; user records/s is wall-clock and includes waiting for kinesalite.
func BenchmarkTailFromKinesalite(b *testing.B) {
	e := localtest.Kinesis(b, kinesislocal.Options{})
	kc := e.Client()
	stream := localtest.Stream(b, kc, 1)
	recs := benchAggregates(200, benchPerAgg)
	for i := 0; i < len(recs); i += 100 {
		var entries []types.PutRecordsRequestEntry
		for _, r := range recs[i:min(i+100, len(recs))] {
			entries = append(entries, types.PutRecordsRequestEntry{Data: r.Data, PartitionKey: r.PartitionKey})
		}
		out, err := kc.PutRecords(context.Background(), &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries})
		if err != nil || aws.ToInt32(out.FailedRecordCount) != 0 {
			b.Fatalf("PutRecords: %v", err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	users := 0
	for i := 0; i < b.N; i++ {
		s, err := runTail(context.Background(), kc, logread.Options{Stream: stream, MinInterval: time.Millisecond}, logread.AppendJSON,
			io.Discard, io.Discard, false)
		if err != nil {
			b.Fatal(err)
		}
		users += int(s.UserRecords)
	}
	if users != b.N*len(recs)*benchPerAgg {
		b.Fatalf("read %d user records, want %d", users, b.N*len(recs)*benchPerAgg)
	}
	reportPerUser(b, users, cpu)
}

// reportPerUser reports wall-clock and CPU time per user record: on a shared machine the
// process's CPU time (user+system, all threads, GC included) is what one core would spend.
func reportPerUser(b *testing.B, users int, cpuStart time.Duration) {
	cpu := cpuTime() - cpuStart
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(users), "ns/user-record")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(users), "cpu-ns/user-record")
	b.ReportMetric(float64(users)/cpu.Seconds(), "user-records/cpu-s")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
