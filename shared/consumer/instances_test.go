package consumer_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/nsqk/nsqk/shared/consumer"
	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/dynalocal"
	"github.com/nsqk/nsqk/shared/local/esm"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/localtest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// faults fails three user records once each, in the middle of their aggregates: an error, a
// panic, and a handler that blocks until its context ends (the processor stops before the
// invocation deadline).
type faults struct {
	mu      sync.Mutex
	pending map[string]string // message -> fault
	handled map[string]int
	order   []string // messages in the order they were handled
}

func (f *faults) handle(ctx context.Context, r consumer.Record) error {
	msg := string(r.Data)
	f.mu.Lock()
	fault := f.pending[msg]
	delete(f.pending, msg)
	f.mu.Unlock()
	switch fault {
	case "error":
		return fmt.Errorf("transient failure at %s", msg)
	case "panic":
		panic("handler bug at " + msg)
	case "timeout":
		<-ctx.Done()
		return ctx.Err()
	}
	f.mu.Lock()
	f.handled[msg]++
	f.order = append(f.order, msg)
	f.mu.Unlock()
	return nil
}

// TestRetriesOnFreshInstancesProcessEachSubRecordOnce runs the local event source mapping on a
// stream of aggregates with faults in the middle of three of them, every invocation on a new
// instance. With the checkpoints in DynamoDB (dynalite) shared by the instances, every user
// record is processed exactly once and each key's records in order; with an in-memory store per
// instance, the sub-records before each fault are processed again.
func TestRetriesOnFreshInstancesProcessEachSubRecordOnce(t *testing.T) {
	kc := localtest.Kinesis(t, kinesislocal.Options{}).Client()
	d := localtest.Dynamo(t)
	table := localtest.Table(t, d.Client(), "id")
	for _, tc := range []struct {
		name       string
		store      func() consumer.CheckpointStore
		duplicates int
	}{
		{"dynamodb", func() consumer.CheckpointStore {
			return consumer.NewDynamoCheckpoints(dynalocal.NewClient(d.Endpoint), table, "orders", 24*time.Hour)
		}, 0},
		// The sub-records before the three faults: 4 + 7 + 5.
		{"memory per instance", func() consumer.CheckpointStore { return consumer.NewMemoryCheckpoints() }, 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream := localtest.Stream(t, kc, 1)
			const users = 4
			next := make([]int, users)
			var all []string
			message := func(i int) string {
				u := i % users
				next[u]++
				m := fmt.Sprintf("u%d:%d", u, next[u])
				all = append(all, m)
				return m
			}
			var recs []kpl.Record
			for k, size := range []int{10, 1, 10, 10, 1, 10} {
				if size == 1 {
					recs = append(recs, kpl.Record{PartitionKey: "p", Data: []byte(message(k))})
					continue
				}
				a := kpl.NewAggregator(kpl.AggregatorConfig{})
				for i := 0; i < size; i++ {
					if err := a.Add(fmt.Sprintf("u%d", i%users), "", []byte(message(i))); err != nil {
						t.Fatal(err)
					}
				}
				recs = append(recs, a.Flush(nil))
			}
			for _, r := range recs {
				if _, err := kc.PutRecord(context.Background(), &kinesis.PutRecordInput{StreamName: aws.String(stream),
					PartitionKey: aws.String(r.PartitionKey), Data: r.Data}); err != nil {
					t.Fatal(err)
				}
			}
			// Aggregate 1 (Kinesis record 0) fails at sub-record 4, aggregate 3 (record 3) at 7,
			// aggregate 4 (record 5) at 5.
			f := &faults{handled: map[string]int{}, pending: map[string]string{
				all[4]: "error", all[11+10+7]: "panic", all[11+10+10+1+5]: "timeout"}}
			// Every invocation on a new instance: a new Processor with a new checkpoint store (a cold
			// start, another concurrent instance), as Lambda may do for any retry.
			fn := esm.Factory(func() lambda.Handler {
				return lambda.NewHandler(consumer.NewProcessor(f.handle, consumer.WithLogger(quiet), consumer.WithCheckpointStore(tc.store()),
					consumer.WithDeadlineMargin(300*time.Millisecond)).Handle)
			})
			m := esm.New(kc, fn, esm.Config{Stream: stream, FunctionName: "orders", BatchSize: 100,
				InstancePerInvocation: true, FastTiming: true,
				ReportBatchItemFailures: true, BisectBatchOnFunctionError: true, MaximumRetryAttempts: 5,
				FunctionTimeout: 1500 * time.Millisecond, PollInterval: 20 * time.Millisecond,
				RetryBackoff: time.Millisecond, Logger: quiet})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- m.Run(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
			}()
			wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
			defer wcancel()
			s, err := m.Wait(wctx, func(s esm.Stats) bool { return s.RecordsDone >= int64(len(recs)) })
			if err != nil {
				t.Fatalf("%v; stats %+v", err, s)
			}
			if s.OnFailureRecords != 0 || s.PartialFailures != 3 || s.FunctionErrors != 0 {
				t.Fatalf("stats %+v: want three partial failures (one per fault) and nothing discarded", s)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.pending) != 0 {
				t.Fatalf("faults not reached: %v", f.pending)
			}
			dups := 0
			for _, m := range all {
				switch n := f.handled[m]; {
				case n == 0:
					t.Errorf("%s never processed", m)
				case n > 1:
					dups += n - 1
				}
			}
			if dups != tc.duplicates {
				t.Errorf("%d duplicate user records, want %d", dups, tc.duplicates)
			}
			// Per-key order: each user's messages first appear as 1, 2, 3, ...
			last := map[string]int{}
			for _, m := range f.order {
				u, n, _ := strings.Cut(m, ":")
				seq, _ := strconv.Atoi(n)
				if seq > last[u]+1 {
					t.Fatalf("%s processed before %s:%d", m, u, last[u]+1)
				}
				last[u] = max(last[u], seq)
			}
		})
	}
}
