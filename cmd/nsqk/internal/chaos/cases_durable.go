package chaos

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/nsqk/nsqk/shared/consumer"
	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/dynalocal"
	"github.com/nsqk/nsqk/shared/local/esm"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/sqslocal"
	"github.com/nsqk/nsqk/shared/location"
)

// Kinds of the durable consumer cases.
const (
	durablePoisonDL     = "poison-dead-letter"
	durablePoisonDLDown = "poison-dead-letter-down"
	durableFresh        = "fresh-instances"
	durableParallel     = "parallel-instances"
)

func durableCases() []Case {
	common := "every invocation runs on a fresh instance (a new processor) with the checkpoints in dynalite; "
	return []Case{
		{Name: "consumer-poison-dead-letter", Group: "consumer", Quick: true,
			Summary: "a user record the handler rejects as permanent (consumer.Permanent) inside an aggregate; the dead-letter queue in a local SQS; " + common,
			Rule: "exactly that user record in the dead-letter queue (its shard, sequence and sub-sequence number, bytes, reason); nothing to the " +
				"on-failure destination; every other user record processed once (duplicated=0, lost=0), in order per user",
			Run: func(ctx context.Context, t *T) error { return durableFault(ctx, t, durablePoisonDL) }},
		{Name: "consumer-poison-dead-letter-down", Group: "consumer",
			Summary: "the same permanent failure while the dead-letter queue refuses every message (the queue does not exist)",
			Rule: "falls back to stop-and-report: the bad record's Kinesis record goes to the on-failure destination (records after the bad one " +
				"in its aggregate count as on-failure), nothing else; lost=0, duplicated=0, reordered=0",
			Run: func(ctx context.Context, t *T) error { return durableFault(ctx, t, durablePoisonDLDown) }},
		{Name: "consumer-fresh-instances-dynamodb", Group: "consumer",
			Summary: "a transient error and a panic, each once, in the middle of two aggregates; " + common,
			Rule:    "every user record processed exactly once (duplicated=0, lost=0) and in order per user; nothing to the on-failure destination",
			Run:     func(ctx context.Context, t *T) error { return durableFault(ctx, t, durableFresh) }},
		{Name: "consumer-parallel-instances", Group: "consumer",
			Summary: "the same faults with ParallelizationFactor 2: aggregates of two key buckets (outer partition keys b0 and b1, as the bridge's " +
				"--key-buckets 2 writes them) in two concurrent lanes of one shard; " + common,
			Rule: "every user record processed exactly once (duplicated=0, lost=0) and in order per user; nothing to the on-failure destination",
			Run:  func(ctx context.Context, t *T) error { return durableFault(ctx, t, durableParallel) }},
	}
}

// durableFault writes 40 KPL aggregates of 10 location messages to a 1-shard stream and runs the
// event source mapping emulator on a function whose every invocation builds a new processor.
func durableFault(ctx context.Context, t *T, kind string) error {
	emu, err := t.env.Kinesalite(ctx)
	if err != nil {
		return err
	}
	kc := emu.Client()
	stream := "chaos-" + filepath.Base(t.Dir)
	kc.DeleteStream(ctx, &kinesis.DeleteStreamInput{StreamName: aws.String(stream)})
	WaitFor(ctx, 30*time.Second, "old stream gone", func() bool {
		_, err := kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)})
		return err != nil
	})
	if err := kinesislocal.CreateStream(ctx, kc, stream, 1); err != nil {
		return err
	}
	t.Cleanup(func() {
		kc.DeleteStream(context.Background(), &kinesis.DeleteStreamInput{StreamName: aws.String(stream)})
	})

	dyn, err := dynalocal.Start(ctx, dynalocal.Options{})
	if err != nil {
		return err
	}
	t.Cleanup(func() { dyn.Close() })
	const table = "checkpoints"
	if err := dynalocal.CreateTable(ctx, dyn.Client(), table, "id"); err != nil {
		return err
	}
	sq, err := sqslocal.Start(ctx, sqslocal.Options{})
	if err != nil {
		return err
	}
	t.Cleanup(func() { sq.Close() })
	sc := sq.Client()
	queue, err := sqslocal.CreateQueue(ctx, sc, "chaos-dead-letter")
	if err != nil {
		return err
	}
	sendTo := queue
	if kind == durablePoisonDLDown {
		sendTo = sq.Endpoint + "/123456789012/no-such-queue"
	}
	t.Event("dynalite on %s, local SQS on %s; dead letters to %s", dyn.Endpoint, sq.Endpoint, sendTo)

	// 40 aggregates of 10; faults at (record, sub-record). With two key buckets, a user's
	// messages all go to the aggregates of its bucket (outer partition key b0 or b1), which the
	// mapping assigns to its lane.
	const records, perAgg = 40, 10
	gen := location.NewGenerator(20, 43)
	recs := make([][]consumerRec, 0, records)
	var outer []string
	buckets := 1
	if kind == durableParallel {
		buckets = 2
	}
	pending := make([][]consumerRec, buckets)
	for len(recs) < records {
		b, user, seq := gen.Next(nil)
		var idx int
		fmt.Sscanf(user, "u%d", &idx)
		k := idx % buckets
		pending[k] = append(pending[k], consumerRec{key: MsgKey{user, seq}, data: b})
		if len(pending[k]) == perAgg {
			recs, outer = append(recs, pending[k]), append(outer, fmt.Sprintf("b%d", k))
			pending[k] = nil
		}
	}
	faults := map[MsgKey]string{}
	mark := func(r, s int, fault string) {
		u := &recs[r][s]
		if fault == "permanent" {
			u.bad = true
			u.data = append(u.data[:len(u.data)-1:len(u.data)-1], `,"chaos":"permanent"}`...)
		}
		faults[u.key] = fault
	}
	const badRec, badSub = 15, 4
	if kind == durableFresh || kind == durableParallel {
		mark(10, 3, "error")
		mark(25, 6, "panic")
	} else {
		mark(badRec, badSub, "permanent")
	}
	var entries []types.PutRecordsRequestEntry
	for i, group := range recs {
		agg := kpl.NewAggregator(kpl.AggregatorConfig{OuterPartitionKey: outer[i]})
		for _, u := range group {
			if err := agg.Add(u.key.User, "", u.data); err != nil {
				return err
			}
		}
		entries = append(entries, types.PutRecordsRequestEntry{Data: agg.Flush(nil).Data, PartitionKey: aws.String(outer[i])})
	}
	out, err := kc.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries})
	if err != nil {
		return err
	}
	var seqs []string
	for _, r := range out.Records {
		if r.ErrorCode != nil {
			return fmt.Errorf("write: %s %s", aws.ToString(r.ErrorCode), aws.ToString(r.ErrorMessage))
		}
		seqs = append(seqs, aws.ToString(r.SequenceNumber))
	}
	t.Event("wrote %d user records in %d aggregates; faults: %v", records*perAgg, records, faults)

	var mu sync.Mutex
	var order []MsgKey
	h := func(ctx context.Context, r consumer.Record) error {
		m, err := location.Parse(r.Data)
		if err != nil {
			return err
		}
		k := MsgKey{m.UserID, m.Seq}
		mu.Lock()
		fault := faults[k]
		if fault == "error" || fault == "panic" {
			delete(faults, k) // once
		}
		mu.Unlock()
		switch fault {
		case "permanent":
			return consumer.Permanent(errors.New("chaos: a record this function can never process"))
		case "error":
			return errors.New("chaos: transient failure")
		case "panic":
			panic("chaos: handler panic")
		}
		mu.Lock()
		order = append(order, k)
		mu.Unlock()
		return nil
	}
	logf, err := os.Create(filepath.Join(t.Dir, "esm.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	log := slog.New(slog.NewJSONHandler(logf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var instances, inFlight, maxInFlight atomic.Int64
	newInstance := func() *consumer.Processor {
		instances.Add(1)
		return consumer.NewProcessor(h, consumer.WithLogger(log),
			consumer.WithCheckpointStore(consumer.NewDynamoCheckpoints(dyn.Client(), table, "chaos-"+kind, time.Hour)),
			consumer.WithDeadLetterQueue(consumer.NewSQSDeadLetters(sq.Client(func(o *sqs.Options) { o.RetryMaxAttempts = 1 }), sendTo)))
	}
	// Every invocation runs on a new instance, as Lambda may do for any retry (a cold start,
	// another concurrent instance).
	factory := esm.Factory(func() lambda.Handler { return lambda.NewHandler(newInstance().Handle) })
	if kind == durableParallel {
		// One function value (not a shared lambda.Handler, which the mapping would serialise): the
		// mapping runs its lanes concurrently, and each call still builds a new instance.
		factory = esm.Shared(func(ctx context.Context, ev events.KinesisEvent) (events.KinesisEventResponse, error) {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for m := maxInFlight.Load(); n > m && !maxInFlight.CompareAndSwap(m, n); m = maxInFlight.Load() {
			}
			return newInstance().Handle(ctx, ev)
		})
	}
	onFailure := filepath.Join(t.Dir, "on-failure.jsonl")
	m := esm.New(kc, factory, esm.Config{Stream: stream, FunctionName: "chaos-" + kind, BatchSize: 10, ParallelizationFactor: buckets,
		InstancePerInvocation: true, FastTiming: true,
		ReportBatchItemFailures: true, BisectBatchOnFunctionError: true, MaximumRetryAttempts: consumerRetries,
		OnFailure: onFailure, FunctionTimeout: 5 * time.Second, PollInterval: 50 * time.Millisecond,
		ShardRefreshInterval: 200 * time.Millisecond, RetryBackoff: 50 * time.Millisecond, Logger: log})
	mctx, stop := context.WithCancel(ctx)
	defer stop()
	mdone := make(chan error, 1)
	go func() { mdone <- m.Run(mctx) }()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	s, werr := m.Wait(wctx, func(s esm.Stats) bool { return s.RecordsDone >= records })
	cancel()
	stop()
	if err := <-mdone; err != nil {
		return err
	}
	t.Check("the shard is read to its end", werr == nil, "%d of %d Kinesis records handled", s.RecordsDone, records)
	t.Event("ESM: %d invocations (each on a new instance: %d), %d function errors, %d partial failures, %d retries, %d bisections, %d records to on-failure",
		s.Invocations, instances.Load(), s.FunctionErrors, s.PartialFailures, s.Retries, s.Bisections, s.OnFailureRecords)
	t.Metric("esm", map[string]int64{"invocations": s.Invocations, "function_errors": s.FunctionErrors, "partial_failures": s.PartialFailures,
		"retries": s.Retries, "bisections": s.Bisections, "on_failure_records": s.OnFailureRecords, "records_done": s.RecordsDone})

	frs, err := esm.ReadOnFailure(onFailure)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	discarded := map[string]bool{}
	for _, fr := range frs {
		for _, sqn := range seqs {
			if consumer.CompareSequenceNumbers(sqn, fr.KinesisBatchInfo.StartSequenceNumber) >= 0 &&
				consumer.CompareSequenceNumbers(sqn, fr.KinesisBatchInfo.EndSequenceNumber) <= 0 {
				discarded[sqn] = true
			}
		}
	}
	letters, err := sqslocal.Drain(ctx, sc, queue)
	if err != nil {
		return err
	}
	var dls []consumer.DeadLetter
	for _, l := range letters {
		var d consumer.DeadLetter
		if err := json.Unmarshal([]byte(aws.ToString(l.Body)), &d); err != nil {
			return fmt.Errorf("dead letter %q: %w", aws.ToString(l.Body), err)
		}
		dls = append(dls, d)
	}

	// Accounting, per user in handler call order.
	a := Accounting{DeadLettered: map[string]int{}}
	count := map[MsgKey]int{}
	maxSeq := map[string]uint64{}
	for _, k := range order {
		count[k]++
		switch {
		case count[k] > 1:
			a.Duplicated++
			a.sample("duplicated", k.String())
		case k.Seq < maxSeq[k.User]:
			a.Reordered++
			a.sample("reordered", fmt.Sprintf("%s after #%d", k, maxSeq[k.User]))
		}
		maxSeq[k.User] = max(maxSeq[k.User], k.Seq)
	}
	inDLQ := func(i, j int) bool {
		for _, d := range dls {
			if d.SequenceNumber == seqs[i] && d.SubSequenceNumber == j {
				return true
			}
		}
		return false
	}
	for i, group := range recs {
		for j, u := range group {
			a.Published++
			switch {
			case u.bad:
				a.PublishedBad++
				switch {
				case inDLQ(i, j):
					a.DeadLettered["dead_letter_queue (bad record)"]++
				case discarded[seqs[i]]:
					a.DeadLettered["on_failure (bad record)"]++
				default:
					a.BadNotDL++
				}
				continue
			}
			a.Good++
			switch {
			case count[u.key] > 0:
				a.Delivered++
			case discarded[seqs[i]]:
				a.DeadLettered["on_failure (same aggregate)"]++
				if !(i == badRec && j > badSub) {
					a.sample("discarded_unexpectedly", u.key.String())
				}
			default:
				a.Lost++
				a.sample("lost", u.key.String())
			}
		}
	}
	t.res.Accounting = a
	t.Check("lost = 0", a.Lost == 0 && a.BadNotDL == 0, "%d lost; bad record kept nowhere: %v%s", a.Lost, a.BadNotDL > 0, samples(a, "lost"))
	t.Check("duplicated = 0", a.Duplicated == 0, "%d%s", a.Duplicated, samples(a, "duplicated"))
	t.Check("reordered = 0", a.Reordered == 0, "%d%s", a.Reordered, samples(a, "reordered"))
	t.Check("only the bad record's aggregate discarded", len(a.Samples["discarded_unexpectedly"]) == 0, "%s", samples(a, "discarded_unexpectedly"))
	switch kind {
	case durablePoisonDL:
		bad := recs[badRec][badSub]
		ok := len(dls) == 1 && dls[0].SequenceNumber == seqs[badRec] && dls[0].SubSequenceNumber == badSub &&
			dls[0].ShardID == "shardId-000000000000" && dls[0].Aggregated && dls[0].PartitionKey == bad.key.User &&
			dls[0].DataBase64 == base64.StdEncoding.EncodeToString(bad.data) && strings.Contains(dls[0].Reason, "can never process")
		var got []string
		for _, d := range dls {
			got = append(got, fmt.Sprintf("%s/%s sub-record %d (%s)", d.ShardID, d.SequenceNumber, d.SubSequenceNumber, d.Reason))
		}
		t.Check("the dead-letter queue holds exactly the bad user record", ok, "%d messages: %s", len(dls), strings.Join(got, "; "))
		t.Check("nothing to the on-failure destination", len(frs) == 0, "%d invocation records", len(frs))
	case durablePoisonDLDown:
		t.Check("nothing in the dead-letter queue", len(dls) == 0, "%d messages", len(dls))
		ok := len(frs) == 1 && frs[0].KinesisBatchInfo.StartSequenceNumber == seqs[badRec] && frs[0].KinesisBatchInfo.EndSequenceNumber == seqs[badRec]
		t.Check("on-failure destination holds exactly the bad Kinesis record", ok, "%d invocation records", len(frs))
	case durableFresh, durableParallel:
		t.Check("nothing to the on-failure destination", len(frs) == 0, "%d invocation records", len(frs))
		if kind == durableParallel {
			t.Note("at most %d invocations in flight at once", maxInFlight.Load())
		}
		t.Check("both faults fired", len(faults) == 0, "not reached: %v", faults)
		t.Check("retries ran on fresh instances", instances.Load() == s.Invocations && s.PartialFailures >= 2,
			"%d instances for %d invocations, %d partial failures", instances.Load(), s.Invocations, s.PartialFailures)
	}
	return nil
}
