package chaos

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/nsqk/nsqk/shared/consumer"
	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/esm"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/location"
	"github.com/nsqk/nsqk/shared/shardmap"
)

// Consumer fault kinds.
const (
	faultPoison    = "poison"
	faultPanic     = "panic"
	faultTimeout   = "timeout"
	faultMalformed = "malformed"
)

const (
	consumerRetries = 2 // ESM MaximumRetryAttempts
	consumerTimeout = time.Second
)

func consumerCases() []Case {
	rule := fmt.Sprintf("the one Kinesis record holding the bad user record goes to the on-failure destination (one JSONL line, that record only, "+
		"after at most %d counted invocations; bisections are free); every other user record is processed: lost=0 (records after the bad one in its aggregate "+
		"count as on-failure), reordered=0 per user in handler order; the shards are read to their end", consumerRetries+1)
	run := func(kind string) func(context.Context, *T) error {
		return func(ctx context.Context, t *T) error { return consumerRun(ctx, t, consumerSpec{kind: kind}) }
	}
	return []Case{
		{Name: "consumer-poison", Group: "consumer", Quick: true,
			Summary: "a user record the handler rejects (returns an error), inside an aggregate, ESM with bisect, 2 retries, on-failure JSONL",
			Rule:    rule + "; duplicated=0 (the checkpoint store skips processed sub-records)",
			Run:     run(faultPoison)},
		{Name: "consumer-panic", Group: "consumer",
			Summary: "a user record that makes the handler panic",
			Rule:    rule + "; duplicated=0; the panic is recovered",
			Run:     run(faultPanic)},
		{Name: "consumer-timeout", Group: "consumer",
			Summary: "a user record whose handler hangs past the function timeout (1 s), ignoring its context",
			Rule:    rule + "; duplicates allowed and counted (a timed-out invocation is retried whole: at-least-once)",
			Run:     run(faultTimeout)},
		{Name: "consumer-malformed-aggregate", Group: "consumer",
			Summary: "a KPL aggregate whose 5th user record has a partition key index out of range",
			Rule:    rule + "; duplicated=0; the records before the fault are processed",
			Run:     run(faultMalformed)},
	}
}

// badAt is a bad user record: Kinesis record rec of shard 0, sub-record sub.
type badAt struct{ rec, sub int }

// consumerSpec is one consumer fault-suite run. The zero value but kind is the classic case: one
// bad user record (shard 0, Kinesis record 20, sub-record 4) under the literal ESM rules.
type consumerSpec struct {
	kind string  // faultPoison, faultPanic, faultTimeout, faultMalformed; "" for no bad record
	bads []badAt // default {20, 4} when kind is set
	// slow is the handler's time per user record (a slow store).
	slow time.Duration
	// esm adjusts the mapping's configuration.
	esm func(*esm.Config)
	// discards are the ranges of Kinesis records of shard 0 (first and last index) the on-failure
	// destination must hold, one invocation record each; default each bad record alone.
	discards [][2]int
	// duplicates, when set, says why duplicate deliveries are allowed (they are counted).
	duplicates string
	// check adds the case's own checks.
	check func(t *T, s esm.Stats, a Accounting)
}

// consumerFault runs the classic case of a fault kind.
func consumerFault(ctx context.Context, t *T, kind string) error {
	return consumerRun(ctx, t, consumerSpec{kind: kind})
}

// consumerRun writes location messages as KPL aggregates (10 user records each) to a 2-shard
// stream, some of them bad, and runs the ESM emulator with a handler built on shared/consumer: a
// fresh processor per function instance, the checkpoint store outside them (as a durable one is).
func consumerRun(ctx context.Context, t *T, spec consumerSpec) error {
	kind := spec.kind
	if kind != "" && spec.bads == nil {
		spec.bads = []badAt{{20, 4}}
	}
	if spec.discards == nil {
		for _, b := range spec.bads {
			spec.discards = append(spec.discards, [2]int{b.rec, b.rec})
		}
	}
	badRecs := map[int]int{} // Kinesis record of shard 0 -> its bad sub-record
	for _, b := range spec.bads {
		badRecs[b.rec] = b.sub
	}
	emu, err := t.env.Kinesalite(ctx)
	if err != nil {
		return err
	}
	kc := emu.Client()
	stream := "chaos-" + filepath.Base(t.Dir)
	if _, err := kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)}); err == nil {
		kc.DeleteStream(ctx, &kinesis.DeleteStreamInput{StreamName: aws.String(stream)})
		WaitFor(ctx, 30*time.Second, "old stream gone", func() bool {
			_, err := kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)})
			return err != nil
		})
	}
	if err := kinesislocal.CreateStream(ctx, kc, stream, 2); err != nil {
		return err
	}
	t.Cleanup(func() {
		kc.DeleteStream(context.Background(), &kinesis.DeleteStreamInput{StreamName: aws.String(stream)})
	})
	smap, err := shardmap.Load(ctx, kc, stream)
	if err != nil {
		return err
	}

	// Build the records: per shard, users u(2i+shard), aggregates of 10 user records.
	const perShard, perAgg = 60, 10
	type urec = consumerRec
	gen := location.NewGenerator(40, 41)
	var recsByShard [2][][]urec
	queue := [2][]urec{}
	published := 0
	for published < 2*perShard*perAgg {
		b, user, seq := gen.Next(nil)
		var idx int
		fmt.Sscanf(user, "u%d", &idx)
		s := idx % 2
		if len(recsByShard[s]) >= perShard {
			continue
		}
		queue[s] = append(queue[s], urec{key: MsgKey{user, seq}, data: b})
		if len(queue[s]) == perAgg {
			recsByShard[s] = append(recsByShard[s], queue[s])
			queue[s] = nil
		}
		published++
	}
	for _, b := range spec.bads {
		bad := &recsByShard[0][b.rec][b.sub]
		bad.bad = true
		if kind != faultMalformed {
			bad.data = append(bad.data[:len(bad.data)-1:len(bad.data)-1], `,"chaos":"`+kind+`"}`...)
		}
	}

	// Write each shard's records in order, one PutRecords per shard.
	seqs := [2][]string{}
	for s := range 2 {
		sh := smap.Shards()[s]
		var entries []types.PutRecordsRequestEntry
		for i, group := range recsByShard[s] {
			var data []byte
			if sub, ok := badRecs[i]; ok && kind == faultMalformed && s == 0 {
				data = malformedAggregate(group, sub)
			} else {
				agg := kpl.NewAggregator(kpl.AggregatorConfig{OuterPartitionKey: "b0", OuterExplicitHashKey: sh.StartKey})
				for _, u := range group {
					if err := agg.Add(u.key.User, "", u.data); err != nil {
						return err
					}
				}
				data = agg.Flush(nil).Data
			}
			entries = append(entries, types.PutRecordsRequestEntry{Data: data, PartitionKey: aws.String("b0"), ExplicitHashKey: aws.String(sh.StartKey)})
		}
		out, err := kc.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries})
		if err != nil {
			return err
		}
		for _, r := range out.Records {
			if r.ErrorCode != nil || aws.ToString(r.ShardId) != sh.ID {
				return fmt.Errorf("write to %s: %s %s on %s", sh.ID, aws.ToString(r.ErrorCode), aws.ToString(r.ErrorMessage), aws.ToString(r.ShardId))
			}
			seqs[s] = append(seqs[s], aws.ToString(r.SequenceNumber))
		}
	}
	for _, b := range spec.bads {
		t.Event("wrote %d user records in %d aggregates on 2 shards; a bad one (%s) is %s/%s (record %d) sub-record %d",
			published, 2*perShard, kind, smap.Shards()[0].ID, seqs[0][b.rec], b.rec, b.sub)
	}

	// The handler: records what it processed, in call order.
	var mu sync.Mutex
	var order []MsgKey
	panics := 0
	h := func(ctx context.Context, r consumer.Record) error {
		switch {
		case strings.Contains(string(r.Data), `"chaos":"poison"`):
			return errors.New("poison record")
		case strings.Contains(string(r.Data), `"chaos":"panic"`):
			mu.Lock()
			panics++
			mu.Unlock()
			panic("chaos: handler panic")
		case strings.Contains(string(r.Data), `"chaos":"timeout"`):
			// Hangs past the function timeout, ignoring its context. Real Lambda kills the
			// sandbox then; the emulator cannot kill a goroutine, so the handler ends with an
			// error rather than a success nobody would have seen.
			time.Sleep(consumerTimeout + consumerTimeout/2)
			return errors.New("hung past the function timeout")
		}
		if spec.slow > 0 {
			time.Sleep(spec.slow)
		}
		m, err := location.Parse(r.Data)
		if err != nil {
			return err
		}
		mu.Lock()
		order = append(order, MsgKey{m.UserID, m.Seq})
		mu.Unlock()
		return nil
	}
	logf, err := os.Create(filepath.Join(t.Dir, "esm.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	log := slog.New(slog.NewJSONHandler(logf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	store := consumer.NewMemoryCheckpoints() // outside the instances: it stands for a durable store
	newFn := func() lambda.Handler {
		return lambda.NewHandler(consumer.NewProcessor(h, consumer.WithCheckpointStore(store), consumer.WithLogger(log)).Handle)
	}
	onFailure := filepath.Join(t.Dir, "on-failure.jsonl")
	const batchSize = 10
	cfg := esm.Config{Stream: stream, FunctionName: "chaos-consumer", BatchSize: batchSize,
		ReportBatchItemFailures: true, BisectBatchOnFunctionError: true, MaximumRetryAttempts: consumerRetries,
		OnFailure: onFailure, FunctionTimeout: consumerTimeout, FastTiming: true, PollInterval: 50 * time.Millisecond,
		ShardRefreshInterval: 200 * time.Millisecond, RetryBackoff: 50 * time.Millisecond, Logger: log}
	if kind != "" {
		cfg.FunctionName = "chaos-" + kind
	}
	if spec.esm != nil {
		spec.esm(&cfg)
	}
	m := esm.New(kc, newFn, cfg)
	mctx, stop := context.WithCancel(ctx)
	defer stop()
	mdone := make(chan error, 1)
	go func() { mdone <- m.Run(mctx) }()
	total := int64(2 * perShard)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	s, werr := m.Wait(wctx, func(s esm.Stats) bool { return s.RecordsDone >= total })
	cancel()
	stop()
	if err := <-mdone; err != nil {
		return err
	}
	if werr != nil {
		t.Check("the shards are read to their end", false, "after 2 min: %d of %d Kinesis records handled", s.RecordsDone, total)
	}
	t.Event("ESM: %d invocations, %d function errors, %d partial failures, %d retries, %d bisections, %d records to on-failure, "+
		"%d instances (%d reset), %d throttles, %d duplicate deliveries",
		s.Invocations, s.FunctionErrors, s.PartialFailures, s.Retries, s.Bisections, s.OnFailureRecords, s.Instances, s.InstanceResets,
		s.Throttles, s.Duplicates)
	t.Metric("esm", map[string]int64{"invocations": s.Invocations, "function_errors": s.FunctionErrors, "partial_failures": s.PartialFailures,
		"retries": s.Retries, "bisections": s.Bisections, "on_failure_records": s.OnFailureRecords, "records_done": s.RecordsDone,
		"instances": s.Instances, "instance_resets": s.InstanceResets, "throttles": s.Throttles, "duplicates": s.Duplicates})

	// On-failure destination: which Kinesis records were discarded.
	frs, err := esm.ReadOnFailure(onFailure)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	discarded := map[string]bool{} // shard/seq
	for _, fr := range frs {
		bi := fr.KinesisBatchInfo
		s := 0
		if bi.ShardID == smap.Shards()[1].ID {
			s = 1
		}
		for _, sq := range seqs[s] {
			if consumer.CompareSequenceNumbers(sq, bi.StartSequenceNumber) >= 0 && consumer.CompareSequenceNumbers(sq, bi.EndSequenceNumber) <= 0 {
				discarded[bi.ShardID+"/"+sq] = true
			}
		}
	}
	// Exactly the expected ranges, in the order written, each with its size.
	okFR := len(frs) == len(spec.discards)
	detail := fmt.Sprintf("%d invocation records, want %d", len(frs), len(spec.discards))
	for i, fr := range frs {
		bi := fr.KinesisBatchInfo
		detail += fmt.Sprintf("; %s %s..%s size %d, condition %s, invocations %d", bi.ShardID, bi.StartSequenceNumber, bi.EndSequenceNumber,
			bi.BatchSize, fr.RequestContext.Condition, fr.RequestContext.ApproximateInvokeCount)
		if i < len(spec.discards) {
			w := spec.discards[i]
			okFR = okFR && bi.ShardID == smap.Shards()[0].ID && bi.StartSequenceNumber == seqs[0][w[0]] &&
				bi.EndSequenceNumber == seqs[0][w[1]] && bi.BatchSize == w[1]-w[0]+1
		}
	}
	t.Check("on-failure destination holds exactly the expected Kinesis records", okFR, "%s", detail)
	// Counted invocations are bounded by MaximumRetryAttempts+1; bisections are free and add at
	// most one invocation per halving of the batch.
	limit := consumerRetries + 1 + bisections(batchSize)
	for _, fr := range frs {
		n := fr.RequestContext.ApproximateInvokeCount
		t.Check("bounded retries", n <= limit && s.Retries <= int64(len(spec.bads)*(consumerRetries+1)),
			"discarded records invoked %d times (limit %d: %d counted + %d bisections); %d retries in all",
			n, limit, consumerRetries+1, bisections(batchSize), s.Retries)
	}
	for id, sh := range s.Shards {
		t.Check("shard "+id+" unblocked", sh.RecordsDone == perShard, "%d of %d Kinesis records handled", sh.RecordsDone, perShard)
	}

	// Accounting, per user in handler call order (duplicates first: a redelivered batch is not a
	// reorder).
	a := Accounting{DeadLettered: map[string]int{}}
	count := map[MsgKey]int{}
	maxSeq := map[string]uint64{}
	for _, k := range order {
		count[k]++
		switch {
		case count[k] > 1:
			a.Duplicated++
		case k.Seq < maxSeq[k.User]:
			a.Reordered++
			a.sample("reordered", fmt.Sprintf("%s after #%d", k, maxSeq[k.User]))
		}
		maxSeq[k.User] = max(maxSeq[k.User], k.Seq)
	}
	for s := range 2 {
		for i, group := range recsByShard[s] {
			inDiscarded := discarded[smap.Shards()[s].ID+"/"+seqs[s][i]]
			for j, u := range group {
				a.Published++
				if u.bad && s == 0 {
					a.PublishedBad++
					if inDiscarded {
						a.DeadLettered["on_failure (bad record)"]++
					} else {
						a.BadNotDL++
					}
					continue
				}
				a.Good++
				switch {
				case count[u.key] > 0:
					a.Delivered++
				case inDiscarded:
					a.DeadLettered["on_failure (same aggregate)"]++
					if sub, ok := badRecs[i]; !(s == 0 && ok && j > sub) {
						a.sample("discarded_unexpectedly", u.key.String())
					}
				default:
					a.Lost++
					a.sample("lost", u.key.String())
				}
			}
		}
	}
	t.res.Accounting = a
	t.Check("lost = 0", a.Lost == 0 && a.BadNotDL == 0, "%d lost, bad record not in on-failure: %v%s", a.Lost, a.BadNotDL > 0, samples(a, "lost"))
	t.Check("reordered = 0", a.Reordered == 0, "%d%s", a.Reordered, samples(a, "reordered"))
	t.Check("only the bad records' aggregates discarded", len(a.Samples["discarded_unexpectedly"]) == 0, "%d user records on-failure%s",
		a.DeadLetterTotal(), samples(a, "discarded_unexpectedly"))
	switch {
	case kind == faultTimeout:
		t.Note("duplicated %d (allowed: a timed-out invocation is a function error, its batch is retried whole, so records processed before the hanging one may be processed again)", a.Duplicated)
		t.Check("the invocation timed out", s.FunctionErrors > 0 && s.InstanceResets > 0, "%d function errors, %d instances reset", s.FunctionErrors, s.InstanceResets)
	case spec.duplicates != "":
		t.Note("duplicated %d (allowed: %s)", a.Duplicated, spec.duplicates)
	default:
		t.Check("duplicated = 0", a.Duplicated == 0, "%d", a.Duplicated)
	}
	if kind == faultPanic {
		t.Check("the panic is recovered", panics > 0 && len(grepFile(filepath.Join(t.Dir, "esm.log"), "handler panicked")) > 0,
			"%d panics; logged as recovered: %d", panics, len(grepFile(filepath.Join(t.Dir, "esm.log"), "handler panicked")))
	}
	if kind == faultMalformed {
		for _, b := range spec.bads {
			before := 0
			for _, u := range recsByShard[0][b.rec][:b.sub] {
				if count[u.key] > 0 {
					before++
				}
			}
			t.Check("records before the fault processed", before == b.sub, "%d of %d", before, b.sub)
		}
	}
	if spec.check != nil {
		spec.check(t, s, a)
	}
	return nil
}

// bisections is how many times a batch of n records can be halved before one record is alone.
func bisections(n int) int {
	k := 0
	for ; n > 1; k++ {
		n -= n / 2 // the larger half
	}
	return k
}

// consumerRec is a user record of the consumer cases.
type consumerRec struct {
	key  MsgKey
	bad  bool
	data []byte
}

// malformedAggregate encodes a KPL aggregate whose user record bad has a partition key index out
// of range (the MD5 is right: the fault is in the content, not the framing).
func malformedAggregate(group []consumerRec, bad int) []byte {
	var body []byte
	index := map[string]uint64{}
	for _, u := range group {
		if _, ok := index[u.key.User]; !ok {
			index[u.key.User] = uint64(len(index))
			body = protowire.AppendTag(body, 1, protowire.BytesType)
			body = protowire.AppendString(body, u.key.User)
		}
	}
	for i, u := range group {
		idx := index[u.key.User]
		if i == bad {
			idx = 99
		}
		var rec []byte
		rec = protowire.AppendTag(rec, 1, protowire.VarintType)
		rec = protowire.AppendVarint(rec, idx)
		rec = protowire.AppendTag(rec, 3, protowire.BytesType)
		rec = protowire.AppendBytes(rec, u.data)
		body = protowire.AppendTag(body, 3, protowire.BytesType)
		body = protowire.AppendBytes(body, rec)
	}
	sum := md5.Sum(body)
	out := append([]byte(kpl.Magic), body...)
	return append(out, sum[:]...)
}

// grepFile returns the lines of a file containing s.
func grepFile(path, s string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}
