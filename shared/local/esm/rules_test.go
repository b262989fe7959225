package esm

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/google/go-cmp/cmp"

	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
)

// One test per AWS rule the emulator applies literally (see the package doc for the sources).

func ok(int, events.KinesisEvent) (events.KinesisEventResponse, error) {
	return events.KinesisEventResponse{}, nil
}

func onlyFailure(t *testing.T, path string) FailureRecord {
	t.Helper()
	frs, err := ReadOnFailure(path)
	if err != nil || len(frs) != 1 {
		t.Fatalf("on-failure destination: %d records, %v: %+v", len(frs), err, frs)
	}
	return frs[0]
}

// "the batch is bisected at the returned sequence number and Lambda retries only the remaining
// records": at index 0 nothing is split, the same records are retried until
// MaximumRetryAttempts and then discarded, all of them, in one invocation record.
func TestPartialFailureAtTheHeadRetriesTheSameRecordsThenDiscardsThemAll(t *testing.T) {
	c, stream := client(t, kinesislocal.Kinesalite, 1)
	seqs := tenRecords(t, c, stream)
	log := &invocationLog{}
	fn := scripted(log, func(n int, ev events.KinesisEvent) (events.KinesisEventResponse, error) {
		return fails(ev.Records[0].Kinesis.SequenceNumber), nil
	})
	dlq := filepath.Join(t.TempDir(), "dlq.jsonl")
	r := start(t, c, fn, Config{Stream: stream, BatchSize: 10, ReportBatchItemFailures: true, BisectBatchOnFunctionError: true,
		MaximumRetryAttempts: 2, OnFailure: dlq})
	s := r.waitDone(t, 10)
	if d := cmp.Diff([][]string{seqs, seqs, seqs}, log.get()); d != "" {
		t.Fatalf("invocations (-want +got):\n%s", d)
	}
	fr := onlyFailure(t, dlq)
	bi := fr.KinesisBatchInfo
	if s.Bisections != 0 || bi.StartSequenceNumber != seqs[0] || bi.EndSequenceNumber != seqs[9] || bi.BatchSize != 10 ||
		fr.RequestContext.ApproximateInvokeCount != 3 || fr.ResponseContext.FunctionError != "" || fr.ResponseContext.StatusCode != 200 {
		t.Fatalf("stats %+v, on-failure %+v", s, fr)
	}
}

// Whether a partial success counts as a retry attempt is undocumented; the emulator counts it, so
// three partial successes in a row with MaximumRetryAttempts 2 discard what is left.
func TestPartialSuccessCountsAsARetryAttempt(t *testing.T) {
	c, stream := client(t, kinesislocal.Kinesalite, 1)
	seqs := tenRecords(t, c, stream)
	log := &invocationLog{}
	fn := scripted(log, func(n int, ev events.KinesisEvent) (events.KinesisEventResponse, error) {
		return fails(ev.Records[1].Kinesis.SequenceNumber), nil // one record of progress each time
	})
	dlq := filepath.Join(t.TempDir(), "dlq.jsonl")
	r := start(t, c, fn, Config{Stream: stream, BatchSize: 10, ReportBatchItemFailures: true, BisectBatchOnFunctionError: true,
		MaximumRetryAttempts: 2, OnFailure: dlq})
	s := r.waitDone(t, 10)
	if d := cmp.Diff([][]string{seqs, seqs[1:], seqs[2:]}, log.get()); d != "" {
		t.Fatalf("invocations (-want +got):\n%s", d)
	}
	bi := onlyFailure(t, dlq).KinesisBatchInfo
	if bi.StartSequenceNumber != seqs[3] || bi.EndSequenceNumber != seqs[9] || bi.BatchSize != 7 || s.OnFailureRecords != 7 {
		t.Fatalf("stats %+v, on-failure %+v", s, bi)
	}
}

// An invalid partial response is "a complete failure"; the docs bisect on a function error only,
// so it is retried whole (pessimistic reading).
func TestInvalidResponseIsRetriedWholeWithoutBisecting(t *testing.T) {
	c, stream := client(t, kinesislocal.Kinesalite, 1)
	seqs := tenRecords(t, c, stream)
	log := &invocationLog{}
	fn := scripted(log, func(int, events.KinesisEvent) (events.KinesisEventResponse, error) { return fails(""), nil })
	dlq := filepath.Join(t.TempDir(), "dlq.jsonl")
	r := start(t, c, fn, Config{Stream: stream, BatchSize: 10, ReportBatchItemFailures: true, BisectBatchOnFunctionError: true,
		MaximumRetryAttempts: 1, OnFailure: dlq})
	s := r.waitDone(t, 10)
	if d := cmp.Diff([][]string{seqs, seqs}, log.get()); d != "" || s.Bisections != 0 {
		t.Fatalf("bisections %d, invocations (-want +got):\n%s", s.Bisections, d)
	}
	if bi := onlyFailure(t, dlq).KinesisBatchInfo; bi.BatchSize != 10 {
		t.Fatalf("on-failure %+v", bi)
	}
}

// instances is a Factory whose instances know their number, and notice being invoked concurrently.
type instances struct {
	n       atomic.Int64
	mu      sync.Mutex
	calls   []int64 // instance number per invocation
	overlap bool
	respond func(call int, inst int64) (events.KinesisEventResponse, error)
}

func (is *instances) factory() lambda.Handler {
	id := is.n.Add(1)
	var busy atomic.Bool
	return lambda.NewHandler(func(ctx context.Context, ev events.KinesisEvent) (events.KinesisEventResponse, error) {
		if !busy.CompareAndSwap(false, true) {
			is.mu.Lock()
			is.overlap = true
			is.mu.Unlock()
		}
		defer busy.Store(false)
		is.mu.Lock()
		is.calls = append(is.calls, id)
		k := len(is.calls)
		is.mu.Unlock()
		return is.respond(k, id)
	})
}

func (is *instances) get() ([]int64, bool) {
	is.mu.Lock()
	defer is.mu.Unlock()
	return append([]int64(nil), is.calls...), is.overlap
}

// "If the Lambda function crashes or times out during the Invoke phase, Lambda resets the
// execution environment": the next invocation runs in a new instance; otherwise a lane keeps its
// instance.
func TestAnInstanceIsReplacedAfterATimeoutOrACrash(t *testing.T) {
	for _, fault := range []string{"timeout", "crash"} {
		t.Run(fault, func(t *testing.T) {
			c, stream := client(t, kinesislocal.Kinesalite, 1)
			put(t, c, stream, plain("k", "0"), plain("k", "1"))
			is := &instances{respond: func(call int, _ int64) (events.KinesisEventResponse, error) {
				if call == 1 {
					if fault == "crash" {
						panic("crash")
					}
					time.Sleep(600 * time.Millisecond) // past the timeout, ignoring the context
				}
				return events.KinesisEventResponse{}, nil
			}}
			r := start(t, c, Factory(is.factory), Config{Stream: stream, BatchSize: 1, FunctionTimeout: 200 * time.Millisecond,
				MaximumRetryAttempts: RetryForever})
			s := r.waitDone(t, 2)
			calls, _ := is.get()
			if d := cmp.Diff([]int64{1, 2, 2}, calls); d != "" {
				t.Fatalf("instance per invocation (-want +got):\n%s", d)
			}
			if s.Instances != 2 || s.InstanceResets != 1 || s.FunctionErrors != 1 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

// One instance per concurrent invocation (lane), never invoked twice at once; with
// InstancePerInvocation a new one every time.
func TestAnInstancePerLaneOrPerInvocation(t *testing.T) {
	c, stream := client(t, kinesislocal.Kinesalite, 1)
	var recs []kpl.Record
	lanes := map[uint32]bool{}
	for i := range 40 {
		key := fmt.Sprint("key-", i%8)
		h := fnv.New32a()
		h.Write([]byte(key))
		lanes[h.Sum32()%3] = true
		recs = append(recs, plain(key, fmt.Sprint(i)))
	}
	put(t, c, stream, recs...)
	slow := func(int, int64) (events.KinesisEventResponse, error) {
		time.Sleep(5 * time.Millisecond) // long enough for the lanes to overlap
		return events.KinesisEventResponse{}, nil
	}
	is := &instances{respond: slow}
	s := start(t, c, Factory(is.factory), Config{Stream: stream, BatchSize: 3, ParallelizationFactor: 3}).waitDone(t, 40)
	calls, overlap := is.get()
	if overlap || s.Instances != int64(len(lanes)) || int64(len(calls)) != s.Invocations {
		t.Fatalf("per lane: %d instances for %d lanes, overlap %v, stats %+v", s.Instances, len(lanes), overlap, s)
	}
	is = &instances{respond: slow}
	s = start(t, c, Factory(is.factory), Config{Stream: stream, BatchSize: 3, ParallelizationFactor: 3, InstancePerInvocation: true}).waitDone(t, 40)
	calls, overlap = is.get()
	seen := map[int64]bool{}
	for _, id := range calls {
		seen[id] = true
	}
	if overlap || s.Instances != s.Invocations || len(seen) != len(calls) {
		t.Fatalf("per invocation: %d instances for %d invocations (%d distinct), overlap %v", s.Instances, s.Invocations, len(seen), overlap)
	}
}

// pollLog records when GetRecords is called.
type pollLog struct {
	KinesisAPI
	mu    sync.Mutex
	calls []time.Time
}

func (p *pollLog) GetRecords(ctx context.Context, in *kinesis.GetRecordsInput, o ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error) {
	p.mu.Lock()
	p.calls = append(p.calls, time.Now())
	p.mu.Unlock()
	return p.KinesisAPI.GetRecords(ctx, in, o...)
}

func (p *pollLog) get() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.calls...)
}

// "Lambda polls each shard in your Kinesis stream for records at a base rate of once per second":
// with AWS timing an idle shard is read no more often than that.
func TestAnIdleShardIsPolledOncePerSecond(t *testing.T) {
	c, stream := client(t, kinesislocal.Kinesalite, 1)
	pl := &pollLog{KinesisAPI: c}
	startMapping(t, pl, Shared(ok), Config{Stream: stream})
	deadline := time.Now().Add(30 * time.Second)
	for len(pl.get()) < 4 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // polling a condition; the assertion is on the recorded times
	}
	calls := pl.get()
	if len(calls) < 4 {
		t.Fatalf("%d GetRecords calls in 30 s", len(calls))
	}
	for i := 1; i < len(calls); i++ {
		if gap := calls[i].Sub(calls[i-1]); gap < time.Second-10*time.Millisecond {
			t.Fatalf("GetRecords %d came %v after the previous one on an idle shard", i, gap)
		}
	}
}

// Throttles are retried at no retry cost ("Before invocation: ... it retries until the records
// expire or exceed the maximum age").
func TestThrottlesRetryAtNoCostUntilTheRecordsExpire(t *testing.T) {
	c, stream := client(t, kinesislocal.Kinesalite, 1)
	seqs := tenRecords(t, c, stream)
	log := &invocationLog{}
	var throttled atomic.Int64
	r := start(t, c, scripted(log, ok), Config{Stream: stream, BatchSize: 10, MaximumRetryAttempts: 0,
		Faults: Faults{Throttle: func(string, string) bool { return throttled.Add(1) <= 3 }}})
	s := r.waitDone(t, 10)
	if d := cmp.Diff([][]string{seqs}, log.get()); d != "" || s.Throttles != 3 || s.Retries != 0 || s.OnFailureRecords != 0 {
		t.Fatalf("stats %+v, invocations (-want +got):\n%s", s, d)
	}

	// Throttled for good: the records expire, and go to the on-failure destination uninvoked.
	c, stream = client(t, kinesislocal.Kinesalite, 1)
	seqs = tenRecords(t, c, stream)
	log = &invocationLog{}
	dlq := filepath.Join(t.TempDir(), "dlq.jsonl")
	r = start(t, c, scripted(log, ok), Config{Stream: stream, BatchSize: 10, MaximumRetryAttempts: 0,
		MaximumRecordAge: 500 * time.Millisecond, OnFailure: dlq, Faults: Faults{Throttle: func(string, string) bool { return true }}})
	s = r.waitDone(t, 10)
	fr := onlyFailure(t, dlq)
	if len(log.get()) != 0 || s.Throttles == 0 || fr.RequestContext.Condition != ConditionRecordAge ||
		fr.RequestContext.ApproximateInvokeCount != 0 || fr.ResponseContext.StatusCode != 0 ||
		fr.KinesisBatchInfo.StartSequenceNumber != seqs[0] || fr.KinesisBatchInfo.BatchSize != 10 {
		t.Fatalf("stats %+v, on-failure %+v", s, fr)
	}
}

// "Lambda event source mappings process each event at least once, and duplicate processing of
// records can occur."
func TestDuplicateDeliveryInvokesTheBatchAgain(t *testing.T) {
	c, stream := client(t, kinesislocal.Kinesalite, 1)
	seqs := tenRecords(t, c, stream)
	log := &invocationLog{}
	var once atomic.Bool
	r := start(t, c, scripted(log, ok), Config{Stream: stream, BatchSize: 10,
		Faults: Faults{Duplicate: func(string, string) bool { return once.CompareAndSwap(false, true) }}})
	s := r.waitDone(t, 10)
	if d := cmp.Diff([][]string{seqs, seqs}, log.get()); d != "" || s.Duplicates != 1 || s.RecordsDone != 10 {
		t.Fatalf("stats %+v, invocations (-want +got):\n%s", s, d)
	}
}

// AWS may send one invocation record for many discarded records (its example spans 500); with
// ConsolidateDiscards the discards of a batch become one record whose range spans them all.
func TestConsolidatedDiscardsSpanOneRange(t *testing.T) {
	for _, consolidate := range []bool{false, true} {
		name := map[bool]string{false: "separate", true: "consolidated"}[consolidate]
		t.Run(name, func(t *testing.T) {
			c, stream := client(t, kinesislocal.Kinesalite, 1)
			seqs := tenRecords(t, c, stream)
			fn := scripted(&invocationLog{}, func(_ int, ev events.KinesisEvent) (events.KinesisEventResponse, error) {
				for _, r := range ev.Records {
					if d := string(r.Kinesis.Data); d == "2" || d == "7" {
						return events.KinesisEventResponse{}, errors.New("bad record " + d)
					}
				}
				return events.KinesisEventResponse{}, nil
			})
			dlq := filepath.Join(t.TempDir(), "dlq.jsonl")
			r := start(t, c, fn, Config{Stream: stream, BatchSize: 10, BisectBatchOnFunctionError: true, MaximumRetryAttempts: 0,
				OnFailure: dlq, ConsolidateDiscards: consolidate})
			s := r.waitDone(t, 10)
			frs, err := ReadOnFailure(dlq)
			if err != nil {
				t.Fatal(err)
			}
			type rng struct {
				Start, End string
				Size       int
			}
			var got []rng
			for _, fr := range frs {
				got = append(got, rng{fr.KinesisBatchInfo.StartSequenceNumber, fr.KinesisBatchInfo.EndSequenceNumber, fr.KinesisBatchInfo.BatchSize})
			}
			want := []rng{{seqs[2], seqs[2], 1}, {seqs[7], seqs[7], 1}}
			if consolidate {
				want = []rng{{seqs[2], seqs[7], 6}}
			}
			if d := cmp.Diff(want, got); d != "" || s.OnFailureRecords != 2 {
				t.Fatalf("stats %+v, invocation records (-want +got):\n%s", s, d)
			}
		})
	}
}
