package esm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/google/go-cmp/cmp"

	"github.com/nsqk/nsqk/shared/consumer"
	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/localtest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// ---- no emulator ----

func TestBuildEventIsTheLambdaShape(t *testing.T) {
	arrival := time.UnixMilli(1545084650987)
	recs := []types.Record{{
		Data: []byte("Hello, this is a test."), PartitionKey: aws.String("1"),
		SequenceNumber:              aws.String("49590338271490256608559692538361571095921575989136588898"),
		ApproximateArrivalTimestamp: &arrival,
	}, {
		Data: []byte{0xf3, 0x89}, PartitionKey: aws.String("a"), SequenceNumber: aws.String("49590338271490256608559692538361571095921575989136588899"),
		ApproximateArrivalTimestamp: &arrival, EncryptionType: types.EncryptionTypeKms,
	}}
	b, err := BuildEvent("shardId-000000000006", "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream", recs, EventOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The first record, byte for byte, in the key order of the AWS example event.
	want := `{"Records":[{"kinesis":{"kinesisSchemaVersion":"1.0","partitionKey":"1","sequenceNumber":"49590338271490256608559692538361571095921575989136588898","data":"SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==","approximateArrivalTimestamp":1545084650.987},"eventSource":"aws:kinesis","eventVersion":"1.0","eventID":"shardId-000000000006:49590338271490256608559692538361571095921575989136588898","eventName":"aws:kinesis:record","invokeIdentityArn":"arn:aws:iam::123456789012:role/nsqk-local","awsRegion":"us-east-2","eventSourceARN":"arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream"},`
	if !strings.HasPrefix(string(b), want) {
		t.Fatalf("got\n%s\nwant prefix\n%s", b, want)
	}
	var ev events.KinesisEvent
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	if r := ev.Records[1]; r.Kinesis.EncryptionType != "KMS" || r.Kinesis.ApproximateArrivalTimestamp.Sub(arrival).Abs() > time.Microsecond || string(r.Kinesis.Data) != "\xf3\x89" {
		t.Fatalf("second record %+v", r)
	}
}

func TestPartialResponseRules(t *testing.T) {
	seqs := []string{"95", "100", "101", "1000"}
	for _, tc := range []struct {
		resp  string
		idx   int
		whole bool
	}{
		{`{"batchItemFailures":[]}`, -1, false},
		{`{"batchItemFailures":null}`, -1, false},
		{`{}`, -1, false},
		{`null`, -1, false},
		{``, -1, false},
		{`"ok"`, -1, false},
		{`{"batchItemFailures":[{"itemIdentifier":"1000"},{"itemIdentifier":"100"}]}`, 1, false}, // lowest, numerically
		{`{"batchItemFailures":[{"itemIdentifier":"101"}]}`, 2, false},
		{`{"batchItemFailures":[{"itemIdentifier":""}]}`, 0, true},
		{`{"batchItemFailures":[{"itemIdentifier":null}]}`, 0, true},
		{`{"batchItemFailures":[{"itemId":"100"}]}`, 0, true},
		{`{"batchItemFailures":[{"itemIdentifier":"7"}]}`, 0, true},
		{`{"batchItemFailures":"100"}`, 0, true},
	} {
		idx, whole, _ := partialResult([]byte(tc.resp), seqs)
		if idx != tc.idx || whole != tc.whole {
			t.Errorf("%s: idx %d whole %v, want %d %v", tc.resp, idx, whole, tc.idx, tc.whole)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []Config{
		{},
		{Stream: "s", BatchSize: 10001},
		{Stream: "s", StartingPosition: AtTimestamp},
		{Stream: "s", StartingPosition: "EARLIEST"},
		{Stream: "s", MaximumRetryAttempts: -2},
		{Stream: "s", ParallelizationFactor: 11},
		{Stream: "s", MaxBatchingWindow: 6 * time.Minute},
		// AWS's units: whole seconds, and no faster polling than once per second.
		{Stream: "s", MaxBatchingWindow: 200 * time.Millisecond},
		{Stream: "s", FunctionTimeout: 1500 * time.Millisecond},
		{Stream: "s", FunctionTimeout: 901 * time.Second},
		{Stream: "s", MaximumRecordAge: 30 * time.Second},
		{Stream: "s", MaximumRecordAge: 90500 * time.Millisecond},
		{Stream: "s", PollInterval: 200 * time.Millisecond},
	} {
		if err := New(nil, nil, c).Run(context.Background()); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	// FastTiming accepts them (the stream lookup is what fails then).
	for _, c := range []Config{
		{Stream: "s", FastTiming: true, MaxBatchingWindow: 200 * time.Millisecond, FunctionTimeout: 1500 * time.Millisecond,
			MaximumRecordAge: 30 * time.Second, PollInterval: 200 * time.Millisecond},
	} {
		if err := c.setDefaults(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	c := Config{Stream: "s"}
	if err := c.setDefaults(); err != nil || c.PollInterval != time.Second || c.MaxBatchingWindow != 0 || c.FunctionTimeout != 3*time.Second {
		t.Errorf("defaults %+v, %v; want 1 s polling, no window, 3 s timeout", c, err)
	}
}

// ---- against kinesalite / kinesis-mock ----

func TestMain(m *testing.M) { localtest.Main(m) }

// client returns a client of a shared emulator and a fresh stream with n shards on it.
func client(t *testing.T, kind kinesislocal.Kind, shards int32) (*kinesis.Client, string) {
	t.Helper()
	c := localtest.SharedKinesis(t, kinesislocal.Options{Kind: kind, Stderr: os.Stderr}).Client()
	return c, localtest.Stream(t, c, shards)
}

// put writes records one by one (so that their order in the shard is the call order) and
// returns their sequence numbers and shards.
func put(t *testing.T, c *kinesis.Client, stream string, recs ...kpl.Record) (seqs, shards []string) {
	t.Helper()
	for _, r := range recs {
		in := &kinesis.PutRecordInput{StreamName: aws.String(stream), PartitionKey: aws.String(r.PartitionKey), Data: r.Data}
		if r.ExplicitHashKey != "" {
			in.ExplicitHashKey = aws.String(r.ExplicitHashKey)
		}
		out, err := c.PutRecord(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, aws.ToString(out.SequenceNumber))
		shards = append(shards, aws.ToString(out.ShardId))
	}
	return seqs, shards
}

func plain(pk, data string) kpl.Record { return kpl.Record{PartitionKey: pk, Data: []byte(data)} }

func agg(t *testing.T, datas ...string) kpl.Record {
	a := kpl.NewAggregator(kpl.AggregatorConfig{})
	for i, d := range datas {
		if err := a.Add(fmt.Sprintf("user-%d", i), "", []byte(d)); err != nil {
			t.Fatal(err)
		}
	}
	return a.Flush(nil)
}

// invocationLog records what the function received.
type invocationLog struct {
	mu    sync.Mutex
	calls [][]string // sequence numbers per invocation
	shard []string
	arns  []string
}

func (l *invocationLog) add(ev events.KinesisEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var seqs []string
	for _, r := range ev.Records {
		seqs = append(seqs, r.Kinesis.SequenceNumber)
	}
	l.calls = append(l.calls, seqs)
	if len(ev.Records) > 0 {
		l.shard = append(l.shard, consumer.ShardID(ev.Records[0].EventID))
		l.arns = append(l.arns, ev.Records[0].EventSourceArn)
	}
}

func (l *invocationLog) get() [][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

type run struct {
	m      *Mapping
	cancel context.CancelFunc
	done   chan error
}

// start runs a mapping with FastTiming and short intervals. fn is a Factory, or a handler all
// instances share (Shared).
func start(t *testing.T, c KinesisAPI, fn any, cfg Config) *run {
	t.Helper()
	cfg.FastTiming = true
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 20 * time.Millisecond
	}
	if cfg.ShardRefreshInterval == 0 {
		cfg.ShardRefreshInterval = 100 * time.Millisecond
	}
	if cfg.RetryBackoff == 0 {
		cfg.RetryBackoff = time.Millisecond
	}
	if cfg.FunctionTimeout == 0 {
		cfg.FunctionTimeout = 10 * time.Second
	}
	f, ok := fn.(Factory)
	if !ok {
		f = Shared(fn)
	}
	return startMapping(t, c, f, cfg)
}

// startMapping runs a mapping with cfg as it is (AWS timing unless cfg says FastTiming).
func startMapping(t *testing.T, c KinesisAPI, f Factory, cfg Config) *run {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{m: New(c, f, cfg), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- r.m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-r.done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r
}

func (r *run) waitDone(t *testing.T, n int64) Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := r.m.Wait(ctx, func(s Stats) bool { return s.RecordsDone >= n })
	if err != nil {
		t.Fatalf("waiting for %d records handled: %v; stats %+v", n, err, s)
	}
	return s
}

func TestDeliversEveryShardInOrderInBatches(t *testing.T) {
	c, stream := client(t, kinesislocal.Kinesalite, 3)
	var recs []kpl.Record
	users := 0
	for i := range 45 {
		if i%5 == 0 {
			recs = append(recs, agg(t, fmt.Sprint(i, "-a"), fmt.Sprint(i, "-b"), fmt.Sprint(i, "-c")))
			users += 3
		} else {
			recs = append(recs, plain(fmt.Sprint("key-", i), fmt.Sprint(i)))
			users++
		}
	}
	seqs, shardOf := put(t, c, stream, recs...)
	var mu sync.Mutex
	userRecs := 0
	log := &invocationLog{}
	p := consumer.NewProcessor(func(ctx context.Context, r consumer.Record) error {
		mu.Lock()
		userRecs++
		mu.Unlock()
		return nil
	}, consumer.WithLogger(quiet))
	fn := lambda.NewHandler(func(ctx context.Context, ev events.KinesisEvent) (events.KinesisEventResponse, error) {
		log.add(ev)
		return p.Handle(ctx, ev)
	})
	r := start(t, c, fn, Config{Stream: stream, FunctionName: "f", BatchSize: 4, ReportBatchItemFailures: true})
	s := r.waitDone(t, int64(len(recs)))
	if s.RecordsDone != int64(len(recs)) || s.OnFailureRecords != 0 || s.FunctionErrors != 0 {
		t.Fatalf("stats %+v", s)
	}
	got := map[string][]string{}
	calls := log.get()
	for i, call := range calls {
		if len(call) > 4 {
			t.Fatalf("invocation of %d records with BatchSize 4", len(call))
		}
		got[log.shard[i]] = append(got[log.shard[i]], call...)
		if log.arns[i] != r.m.StreamARN() || !strings.HasSuffix(log.arns[i], ":stream/"+stream) {
			t.Fatalf("eventSourceARN %q", log.arns[i])
		}
	}
	want := map[string][]string{}
	for i, sq := range seqs {
		want[shardOf[i]] = append(want[shardOf[i]], sq)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("records per shard, in order, each once (-want +got):\n%s", d)
	}
	if len(want) != 3 {
		t.Fatalf("records went to %d shards; the test wants all 3 used", len(want))
	}
	if userRecs != users {
		t.Fatalf("handled %d user records, want %d", userRecs, users)
	}
	for id, sh := range s.Shards {
		if sh.Checkpoint != want[id][len(want[id])-1] || sh.State != ShardReading {
			t.Fatalf("shard %s: %+v", id, sh)
		}
	}
}

// scripted is a raw Lambda handler whose responses a test scripts per invocation.
func scripted(log *invocationLog, respond func(n int, ev events.KinesisEvent) (events.KinesisEventResponse, error)) func(context.Context, events.KinesisEvent) (events.KinesisEventResponse, error) {
	var mu sync.Mutex
	n := 0
	return func(ctx context.Context, ev events.KinesisEvent) (events.KinesisEventResponse, error) {
		log.add(ev)
		mu.Lock()
		n++
		k := n
		mu.Unlock()
		return respond(k, ev)
	}
}

func fails(seqs ...string) events.KinesisEventResponse {
	var r events.KinesisEventResponse
	for _, s := range seqs {
		r.BatchItemFailures = append(r.BatchItemFailures, events.KinesisBatchItemFailure{ItemIdentifier: s})
	}
	return r
}

func tenRecords(t *testing.T, c *kinesis.Client, stream string) []string {
	var recs []kpl.Record
	for i := range 10 {
		recs = append(recs, plain("k", fmt.Sprint(i)))
	}
	seqs, _ := put(t, c, stream, recs...)
	return seqs
}

func TestPartialFailureResumesAtTheLowestReportedRecord(t *testing.T) {
	c, stream := client(t, kinesislocal.Kinesalite, 1)
	seqs := tenRecords(t, c, stream)
	log := &invocationLog{}
	fn := scripted(log, func(n int, ev events.KinesisEvent) (events.KinesisEventResponse, error) {
		if n == 1 {
			return fails(seqs[7], seqs[3], seqs[5]), nil
		}
		return events.KinesisEventResponse{}, nil
	})
	r := start(t, c, fn, Config{Stream: stream, BatchSize: 10, ReportBatchItemFailures: true, MaximumRetryAttempts: RetryForever})
	s := r.waitDone(t, 10)
	want := [][]string{seqs, seqs[3:]}
	if d := cmp.Diff(want, log.get()); d != "" {
		t.Fatalf("invocations (-want +got):\n%s", d)
	}
	if s.PartialFailures != 1 || s.Retries != 1 || s.Shards["shardId-000000000000"].Checkpoint != seqs[9] {
		t.Fatalf("stats %+v", s)
	}
}

func TestInvalidPartialResponseFailsTheWholeBatch(t *testing.T) {
	c, stream := client(t, kinesislocal.Kinesalite, 1)
	seqs := tenRecords(t, c, stream)
	log := &invocationLog{}
	fn := scripted(log, func(n int, ev events.KinesisEvent) (events.KinesisEventResponse, error) {
		switch n {
		case 1:
			return fails(""), nil // empty itemIdentifier
		case 2:
			return fails("12345"), nil // not in the batch
		}
		return events.KinesisEventResponse{}, nil
	})
	r := start(t, c, fn, Config{Stream: stream, BatchSize: 10, ReportBatchItemFailures: true, MaximumRetryAttempts: 5})
	s := r.waitDone(t, 10)
	if d := cmp.Diff([][]string{seqs, seqs, seqs}, log.get()); d != "" {
		t.Fatalf("invocations (-want +got):\n%s", d)
	}
	if s.Retries != 2 || s.PartialFailures != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestWithoutReportBatchItemFailuresTheResponseIsIgnored(t *testing.T) {
	c, stream := client(t, kinesislocal.Kinesalite, 1)
	seqs := tenRecords(t, c, stream)
	log := &invocationLog{}
	fn := scripted(log, func(n int, ev events.KinesisEvent) (events.KinesisEventResponse, error) {
		return fails(seqs[2]), nil
	})
	r := start(t, c, fn, Config{Stream: stream, BatchSize: 10})
	s := r.waitDone(t, 10)
	if d := cmp.Diff([][]string{seqs}, log.get()); d != "" {
		t.Fatalf("invocations (-want +got):\n%s", d)
	}
	if s.Retries != 0 || s.OnFailureRecords != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// A poison user record inside an aggregate, with the project's own processor and a fresh
// instance per invocation: the partial response checkpoints before the aggregate; redelivered, the
// aggregate fails at the head of the batch before any progress, which the processor makes a
// function error, so the rest is bisected until the aggregate is alone, retried until
// MaximumRetryAttempts, discarded to the on-failure destination, and the shard moves on. With the
// checkpoint store (outside the instances, as a durable one is) no user record is handled twice.
func TestPoisonRecordBisectRetriesOnFailureDestinationAndMovesOn(t *testing.T) {
	c, stream := client(t, kinesislocal.Kinesalite, 1)
	seqs, _ := put(t, c, stream,
		plain("p", "r0"), agg(t, "r1.0", "r1.1", "r1.2"), plain("p", "r2"),
		agg(t, "r3.0", "poison", "r3.2"), plain("p", "r4"), plain("p", "r5"))
	var mu sync.Mutex
	handled := map[string]int{}
	log := &invocationLog{}
	store := consumer.NewMemoryCheckpoints()
	var fn Factory = func() lambda.Handler {
		p := consumer.NewProcessor(func(ctx context.Context, r consumer.Record) error {
			if string(r.Data) == "poison" {
				return errors.New("cannot process")
			}
			mu.Lock()
			handled[string(r.Data)]++
			mu.Unlock()
			return nil
		}, consumer.WithLogger(quiet), consumer.WithCheckpointStore(store))
		return lambda.NewHandler(func(ctx context.Context, ev events.KinesisEvent) (events.KinesisEventResponse, error) {
			log.add(ev)
			return p.Handle(ctx, ev)
		})
	}
	dlq := filepath.Join(t.TempDir(), "on-failure.jsonl")
	r := start(t, c, fn, Config{Stream: stream, FunctionName: "lastlocation", BatchSize: 10, InstancePerInvocation: true,
		ReportBatchItemFailures: true, BisectBatchOnFunctionError: true, MaximumRetryAttempts: 2, OnFailure: dlq})
	s := r.waitDone(t, 6)
	want := [][]string{
		seqs,      // fails at r3 (sub 1): r0..r2 checkpointed; attempt 1 for r3..r5
		seqs[3:],  // r3 resumes at sub 1 and fails first: a function error -> bisect (free)
		seqs[3:4], // the aggregate alone: attempt 2
		seqs[3:4], // attempt 3 > MaximumRetryAttempts: discarded
		seqs[4:],  // the shard moves on
	}
	if d := cmp.Diff(want, log.get()); d != "" {
		t.Fatalf("invocations (-want +got):\n%s", d)
	}
	if s.Bisections != 1 || s.Retries != 2 || s.OnFailureRecords != 1 || s.OnFailureBatches != 1 || s.Invocations != 5 || s.Instances != 5 {
		t.Fatalf("stats %+v", s)
	}
	wantHandled := map[string]int{"r0": 1, "r1.0": 1, "r1.1": 1, "r1.2": 1, "r2": 1, "r3.0": 1, "r4": 1, "r5": 1}
	mu.Lock()
	if d := cmp.Diff(wantHandled, handled); d != "" {
		t.Fatalf("user records handled (-want +got):\n%s", d)
	}
	mu.Unlock()
	frs, err := ReadOnFailure(dlq)
	if err != nil || len(frs) != 1 {
		t.Fatalf("%d records, %v", len(frs), err)
	}
	fr := frs[0]
	if fr.RequestContext.Condition != "RetryAttemptsExhausted" || fr.RequestContext.ApproximateInvokeCount != 4 ||
		fr.RequestContext.FunctionArn != "arn:aws:lambda:us-east-1:000000000000:function:lastlocation" ||
		fr.ResponseContext.StatusCode != 200 || fr.ResponseContext.FunctionError != "Unhandled" || fr.Version != "1.0" {
		t.Fatalf("invocation record %+v", fr)
	}
	bi := fr.KinesisBatchInfo
	if bi.ShardID != "shardId-000000000000" || bi.StartSequenceNumber != seqs[3] || bi.EndSequenceNumber != seqs[3] ||
		bi.BatchSize != 1 || bi.StreamArn != r.m.StreamARN() || len(bi.ApproximateArrivalOfFirstRecord) != len("2019-11-14T00:38:04.835Z") {
		t.Fatalf("KinesisBatchInfo %+v", bi)
	}
	// Later records still flow.
	more, _ := put(t, c, stream, plain("p", "r6"))
	r.waitDone(t, 7)
	if calls := log.get(); !slices.Equal(calls[len(calls)-1], more) {
		t.Fatalf("last invocation %v, want %v", calls[len(calls)-1], more)
	}
}

// Function errors (no partial response): bisect down to the poison record, then bounded retries.
func TestFunctionErrorsBisectDownToThePoisonRecord(t *testing.T) {
	c, stream := client(t, kinesislocal.Kinesalite, 1)
	seqs := tenRecords(t, c, stream)
	log := &invocationLog{}
	fn := scripted(log, func(n int, ev events.KinesisEvent) (events.KinesisEventResponse, error) {
		for _, r := range ev.Records {
			if string(r.Kinesis.Data) == "6" {
				return events.KinesisEventResponse{}, errors.New("poison")
			}
		}
		return events.KinesisEventResponse{}, nil
	})
	dlq := filepath.Join(t.TempDir(), "dlq.jsonl")
	r := start(t, c, fn, Config{Stream: stream, BatchSize: 10, BisectBatchOnFunctionError: true, MaximumRetryAttempts: 1, OnFailure: dlq})
	s := r.waitDone(t, 10)
	want := [][]string{
		seqs, seqs[:5], seqs[5:], // bisect 10 -> 5+5; the first half succeeds
		seqs[5:7], seqs[5:6], seqs[6:7], // 5 -> 2+3, 2 -> 1+1
		seqs[6:7], // retry 1, then discarded
		seqs[7:],  // the second half of the second half
	}
	if d := cmp.Diff(want, log.get()); d != "" {
		t.Fatalf("invocations (-want +got):\n%s", d)
	}
	frs, _ := ReadOnFailure(dlq)
	// approximateInvokeCount counts the invocations that held the record: 10, 5, 2, 1, 1.
	if s.Bisections != 3 || len(frs) != 1 || frs[0].KinesisBatchInfo.StartSequenceNumber != seqs[6] ||
		frs[0].ResponseContext.FunctionError != "Unhandled" || frs[0].RequestContext.ApproximateInvokeCount != 5 {
		t.Fatalf("stats %+v, on-failure %+v", s, frs)
	}
}

func TestRecordsOlderThanMaximumRecordAgeGoToOnFailureWithoutInvocation(t *testing.T) {
	c, stream := client(t, kinesislocal.Kinesalite, 1)
	seqs := tenRecords(t, c, stream)
	log := &invocationLog{}
	fn := scripted(log, func(int, events.KinesisEvent) (events.KinesisEventResponse, error) {
		return events.KinesisEventResponse{}, nil
	})
	dlq := filepath.Join(t.TempDir(), "dlq.jsonl")
	r := start(t, c, fn, Config{Stream: stream, BatchSize: 10, MaximumRecordAge: time.Hour, OnFailure: dlq,
		Now: func() time.Time { return time.Now().Add(2 * time.Hour) }})
	s := r.waitDone(t, 10)
	frs, _ := ReadOnFailure(dlq)
	if len(log.get()) != 0 || s.Invocations != 0 || len(frs) != 1 {
		t.Fatalf("invocations %v, on-failure %+v", log.get(), frs)
	}
	fr := frs[0]
	if fr.RequestContext.Condition != "RecordAgeExceeded" || fr.RequestContext.ApproximateInvokeCount != 0 ||
		fr.KinesisBatchInfo.BatchSize != 10 || fr.KinesisBatchInfo.StartSequenceNumber != seqs[0] || fr.KinesisBatchInfo.EndSequenceNumber != seqs[9] {
		t.Fatalf("%+v", fr)
	}
}

func TestStartingPositions(t *testing.T) {
	c, stream := client(t, kinesislocal.Kinesalite, 1)
	old, _ := put(t, c, stream, plain("k", "old-1"), plain("k", "old-2"))
	ts := time.Now().Add(2 * time.Millisecond)
	for time.Now().Before(ts.Add(3 * time.Millisecond)) { // kinesalite stamps arrival in ms
		runtime.Gosched()
	}
	mid, _ := put(t, c, stream, plain("k", "mid"))
	sequences := func(pos StartingPosition) []string {
		log := &invocationLog{}
		fn := scripted(log, func(int, events.KinesisEvent) (events.KinesisEventResponse, error) {
			return events.KinesisEventResponse{}, nil
		})
		r := start(t, c, fn, Config{Stream: stream, StartingPosition: pos, StartingPositionTimestamp: ts})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// Once the shard has an iterator, write one more record; wait until it is handled.
		if _, err := r.m.Wait(ctx, func(s Stats) bool { return s.Shards["shardId-000000000000"].State == ShardReading }); err != nil {
			t.Fatal(err)
		}
		nw, _ := put(t, c, stream, plain("k", "new-"+string(pos)))
		if _, err := r.m.Wait(ctx, func(s Stats) bool { return s.Shards["shardId-000000000000"].Checkpoint == nw[0] }); err != nil {
			t.Fatal(err)
		}
		r.cancel()
		<-r.done
		r.done <- nil // for the cleanup
		var all []string
		for _, call := range log.get() {
			all = append(all, call...)
		}
		return all
	}
	got := sequences(Latest)
	if len(got) != 1 || slices.Contains(got, old[0]) || slices.Contains(got, mid[0]) {
		t.Fatalf("LATEST delivered %v", got)
	}
	got = sequences(AtTimestamp)
	if len(got) != 3 || got[0] != mid[0] {
		t.Fatalf("AT_TIMESTAMP delivered %v, want mid, the LATEST test's record and its own", got)
	}
	got = sequences(TrimHorizon)
	if len(got) != 6 || got[0] != old[0] {
		t.Fatalf("TRIM_HORIZON delivered %v", got)
	}
}

// ParallelizationFactor: lanes keyed by partition key, several batches of one shard in flight,
// order kept per key.
func TestParallelizationFactorKeepsOrderPerPartitionKey(t *testing.T) {
	c, stream := client(t, kinesislocal.Kinesalite, 1)
	var recs []kpl.Record
	for i := range 60 {
		recs = append(recs, plain(fmt.Sprint("key-", i%6), fmt.Sprint(i)))
	}
	seqs, _ := put(t, c, stream, recs...)
	log := &invocationLog{}
	var mu sync.Mutex
	inFlight, maxInFlight := 0, 0
	gate := make(chan struct{})
	var once sync.Once
	fn := scripted(log, func(n int, ev events.KinesisEvent) (events.KinesisEventResponse, error) {
		mu.Lock()
		inFlight++
		maxInFlight = max(maxInFlight, inFlight)
		if inFlight >= 2 {
			once.Do(func() { close(gate) })
		}
		mu.Unlock()
		<-gate // the first batch waits until a second lane invokes concurrently
		mu.Lock()
		inFlight--
		mu.Unlock()
		return events.KinesisEventResponse{}, nil
	})
	r := start(t, c, fn, Config{Stream: stream, BatchSize: 5, ParallelizationFactor: 3})
	r.waitDone(t, 60)
	keyOf := map[string]string{}
	for i, s := range seqs {
		keyOf[s] = recs[i].PartitionKey
	}
	perKey := map[string][]string{}
	for _, call := range log.get() {
		for _, s := range call {
			perKey[keyOf[s]] = append(perKey[keyOf[s]], s)
		}
	}
	for i, s := range seqs {
		k := recs[i].PartitionKey
		if len(perKey[k]) == 0 || perKey[k][0] != s {
			t.Fatalf("key %s: order broken or record missing at %s: %v", k, s, perKey[k])
		}
		perKey[k] = perKey[k][1:]
	}
	if maxInFlight < 2 {
		t.Fatalf("at most %d batches in flight with ParallelizationFactor 3", maxInFlight)
	}
}

// Resharding on kinesis-mock: a child shard is read only after its parent is finished, and every
// partition key keeps its order across the split.
func TestReshardParentsBeforeChildren(t *testing.T) {
	c, stream := client(t, kinesislocal.KinesisMock, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var before []kpl.Record
	for i := range 12 {
		before = append(before, plain(fmt.Sprint("key-", i%4), fmt.Sprint("a", i)))
	}
	seqA, _ := put(t, c, stream, before...)
	log := &invocationLog{}
	fn := scripted(log, func(int, events.KinesisEvent) (events.KinesisEventResponse, error) {
		return events.KinesisEventResponse{}, nil
	})
	r := start(t, c, fn, Config{Stream: stream, BatchSize: 5, ShardRefreshInterval: 100 * time.Millisecond})
	r.waitDone(t, int64(len(before)))
	if _, err := c.UpdateShardCount(ctx, &kinesis.UpdateShardCountInput{StreamName: aws.String(stream),
		TargetShardCount: aws.Int32(2), ScalingType: types.ScalingTypeUniformScaling}); err != nil {
		t.Fatal(err)
	}
	if err := kinesislocal.WaitActive(ctx, c, stream); err != nil {
		t.Fatal(err)
	}
	var after []kpl.Record
	for i := range 12 {
		after = append(after, plain(fmt.Sprint("key-", i%4), fmt.Sprint("b", i)))
	}
	seqB, shardB := put(t, c, stream, after...)
	s := r.waitDone(t, int64(len(before)+len(after)))
	parent := s.Shards["shardId-000000000000"]
	if parent.State != ShardFinished {
		t.Fatalf("parent %+v", parent)
	}
	children := 0
	for id, sh := range s.Shards {
		if slices.Contains(sh.Parents, "shardId-000000000000") {
			children++
			if !sh.FirstInvokeAt.IsZero() && sh.FirstInvokeAt.Before(parent.FinishedAt) {
				t.Fatalf("child %s invoked at %v, before its parent finished at %v", id, sh.FirstInvokeAt, parent.FinishedAt)
			}
		}
	}
	if children != 2 || slices.Contains(shardB, "shardId-000000000000") {
		t.Fatalf("children %d; records after the split went to %v", children, shardB)
	}
	order := map[string]int{}
	for i, call := range log.get() {
		for _, sq := range call {
			order[sq] = i
		}
	}
	for i := range after {
		for j := range before {
			if after[i].PartitionKey == before[j].PartitionKey && order[seqB[i]] <= order[seqA[j]] {
				t.Fatalf("%s: child record %s delivered no later than parent record %s", after[i].PartitionKey, seqB[i], seqA[j])
			}
		}
	}
}
