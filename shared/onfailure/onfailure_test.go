package onfailure_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/esm"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/logread"
	"github.com/nsqk/nsqk/shared/onfailure"
)

// write puts plain records and one aggregate, returning the sequence numbers and every user
// record's data in stream order.
func write(t *testing.T, kc *kinesis.Client, stream string) (seqs, data []string) {
	t.Helper()
	put := func(pk string, d []byte) {
		out, err := kc.PutRecord(context.Background(), &kinesis.PutRecordInput{StreamName: aws.String(stream), PartitionKey: aws.String(pk), Data: d})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, aws.ToString(out.SequenceNumber))
	}
	put("p", []byte("r0"))
	data = append(data, "r0")
	a := kpl.NewAggregator(kpl.AggregatorConfig{})
	for _, d := range []string{"r1.0", "r1.1", "r1.2"} {
		a.Add("k", "", []byte(d))
		data = append(data, d)
	}
	put("a", a.Flush(nil).Data)
	put("p", []byte("r2"))
	data = append(data, "r2")
	return seqs, data
}

func fetchAll(t *testing.T, kc *kinesis.Client, recs []onfailure.Record) ([]string, []onfailure.Result) {
	t.Helper()
	var got []string
	var results []onfailure.Result
	for _, r := range recs {
		res, err := onfailure.Fetch(context.Background(), kc, "", r.KinesisBatchInfo, func(u *logread.Record) error {
			got = append(got, string(u.Data))
			return nil
		}, func(w string) { t.Error(w) })
		if err != nil {
			t.Fatal(err)
		}
		results = append(results, res)
	}
	return got, results
}

// TestRecordsFromTheLocalEventSourceMapping: a function that always fails, no retries: the
// mapping sends every batch to its on-failure file; failed fetches exactly those records.
func TestRecordsFromTheLocalEventSourceMapping(t *testing.T) {
	e := localtest.Kinesis(t, kinesislocal.Options{})
	kc := e.Client()
	stream := localtest.Stream(t, kc, 1)
	_, data := write(t, kc, stream)
	file := filepath.Join(t.TempDir(), "on-failure.jsonl")
	fn := lambda.NewHandler(func(ctx context.Context, ev events.KinesisEvent) error { return errors.New("always fails") })
	m := esm.New(kc, esm.Shared(fn), esm.Config{Stream: stream, BatchSize: 2, MaximumRetryAttempts: 0, OnFailure: file,
		FastTiming: true, PollInterval: 20 * time.Millisecond, RetryBackoff: time.Millisecond, Logger: quietLogger()})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	if _, err := m.Wait(ctx, func(s esm.Stats) bool { return s.OnFailureRecords == 3 }); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := onfailure.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 {
		t.Fatalf("%d on-failure records, want 2 (batches of 2 and 1)", len(recs))
	}
	got, results := fetchAll(t, kc, recs)
	if !slices.Equal(got, data) {
		t.Errorf("fetched %q, want %q", got, data)
	}
	for i, r := range results {
		if r.Missing != 0 || r.Read != recs[i].KinesisBatchInfo.BatchSize {
			t.Errorf("result %d: %+v", i, r)
		}
	}
}

// TestAWSShapeAndRecordsPastRetention parses records in the shape AWS documents (an SQS message
// body, one per document) and reports what is no longer in the stream.
func TestAWSShapeAndRecordsPastRetention(t *testing.T) {
	e := localtest.Kinesis(t, kinesislocal.Options{})
	kc := e.Client()
	stream := localtest.Stream(t, kc, 1)
	seqs, data := write(t, kc, stream)
	arn := "arn:aws:kinesis:us-east-1:123456789012:stream/" + stream
	doc := func(shard, start, end string, size int) string {
		return fmt.Sprintf(`{
    "requestContext": {
        "requestId": "c9b8fa9f-5a7f-xmpl-af9c-0c604cde93a5",
        "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:myfunction",
        "condition": "RetryAttemptsExhausted",
        "approximateInvokeCount": 1
    },
    "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
    "version": "1.0",
    "timestamp": "2019-11-14T00:38:06.021Z",
    "KinesisBatchInfo": {
        "shardId": %q,
        "startSequenceNumber": %q,
        "endSequenceNumber": %q,
        "approximateArrivalOfFirstRecord": "2019-11-14T00:38:04.835Z",
        "approximateArrivalOfLastRecord": "2019-11-14T00:38:05.580Z",
        "batchSize": %d,
        "streamArn": %q
    }
}`, shard, start, end, size, arn)
	}
	in := doc("shardId-000000000000", seqs[1], seqs[2], 2) + "\n" +
		// Five records claimed where three are stored: two are past the retention period.
		doc("shardId-000000000000", seqs[0], seqs[2], 5) + "\n" +
		doc("shardId-000000000007", seqs[0], seqs[0], 4)
	recs, err := onfailure.Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	got, results := fetchAll(t, kc, recs)
	want := append(append([]string(nil), data[1:]...), data...)
	if !slices.Equal(got, want) {
		t.Errorf("fetched %q, want %q", got, want)
	}
	if r := results[0]; r.Read != 2 || r.Missing != 0 {
		t.Errorf("first: %+v", r)
	}
	if r := results[1]; r.Read != 3 || r.Missing != 2 {
		t.Errorf("second: %+v", r)
	}
	if r := results[2]; !r.ShardGone || r.Missing != 4 {
		t.Errorf("third (a shard no longer listed): %+v", r)
	}
	if _, err := onfailure.Parse(strings.NewReader(`{"hello":"world"}`)); err == nil {
		t.Error("a JSON object that is not an on-failure record was accepted")
	}
	if recs, err := onfailure.Parse(strings.NewReader("[" + doc("s", "1", "2", 1) + "," + doc("s", "3", "4", 1) + "]")); err != nil || len(recs) != 2 {
		t.Errorf("an array: %d records, %v", len(recs), err)
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
