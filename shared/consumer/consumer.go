// Package consumer processes the Kinesis batches a Lambda event source mapping (ESM) delivers:
// it de-aggregates KPL records (keeping each user record's sub-sequence number), calls a handler
// for each user record in order, stops at the first failure and reports it so that Lambda
// resumes exactly there.
//
// # Why a failure stops the batch
//
// An ESM delivers one shard's records in order and, with ReportBatchItemFailures, checkpoints at
// the lowest sequence number the function reports ("If the batchItemFailures array contains
// multiple items, Lambda uses the record with the lowest sequence number as the checkpoint.
// Lambda then retries all records starting from that checkpoint." — Lambda developer guide,
// "Configuring partial batch response with Kinesis Data Streams and Lambda"). Processing past a
// failure would therefore only produce records that are delivered again. The processor stops at
// the first failing user record and returns that Kinesis record's sequence number.
//
// With aggregation the item identifier is the sequence number of the aggregate, so a failure at
// sub-record k makes Lambda redeliver sub-records 0..k-1 as well. A CheckpointStore lets the
// processor skip them: on a failure it saves (shard, sequence number) → k, and on the next
// delivery of that aggregate it starts at sub-record k. DynamoCheckpoints keeps that in a table
// every instance of the function reads (a retry may land on a cold start or another instance);
// MemoryCheckpoints only helps a retry on the same warm instance.
//
// # Poison records
//
// A handler error marked Permanent (an unparseable payload, a record the function can never
// process) does not stop the batch: the processor sends that one user record, with its origin
// and the reason, to the function's DeadLetterQueue (SQS in Lambda) and goes on with the next.
// Any other error is transient and stops the batch as above. A record whose dead-lettering
// fails, or a permanent error without a dead-letter queue, stops the batch too: a record is never
// dropped.
//
// # Never stuck, never silent
//
//   - A handler panic is recovered and treated as that record's failure.
//   - The processor watches the invocation deadline (the context's) and, DeadlineMargin before
//     it, stops and reports the next record as failed instead of letting Lambda time out (a
//     timeout fails the whole batch and throws away the progress made).
//   - An aggregate that cannot be fully expanded (a key index out of range) has the user records
//     before the fault processed, then is reported failed with the error logged. The ESM retries
//     it, bisects, and finally hands it to the on-failure destination: it never vanishes.
//   - Corrupt data never panics (kpl.Deaggregate never panics; a panic there would be recovered
//     all the same).
//
// # Failure at the head of a batch
//
// A partial response naming the batch's first record splits nothing: Lambda retries the same
// records until MaximumRetryAttempts and then discards all of them, healthy ones included ("the
// batch is bisected at the returned sequence number and Lambda retries only the remaining
// records", same page). So when the first record fails before this invocation processed anything,
// Handle returns an error instead: a function error, which BisectBatchOnFunctionError splits in
// two at no retry cost until the bad record is alone (what Powertools' batch processor does when
// every record fails). Otherwise Handle reports the failed record in BatchItemFailures: an error
// would make Lambda retry the records already processed.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/nsqk/nsqk/shared/emf"
	"github.com/nsqk/nsqk/shared/kpl"
)

// Record is one user record: a plain Kinesis record, or one record of a KPL aggregate.
type Record struct {
	ShardID        string // from the event record's eventID ("shardId-000000000001:<seq>")
	SequenceNumber string // of the Kinesis record (the aggregate)
	// SubSequence is the user record's index within its aggregate; 0 for a plain record.
	SubSequence int
	// Aggregated reports whether the Kinesis record was a KPL aggregate.
	Aggregated bool
	// PartitionKey is the user record's key (the Kinesis record's own for a plain record).
	PartitionKey string
	// ExplicitHashKey is the user record's explicit hash key, "" when it has none.
	ExplicitHashKey string
	// ArrivalTime is the Kinesis record's ApproximateArrivalTimestamp.
	ArrivalTime time.Time
	// Data is the user data. It aliases the event: copy it to keep it after the handler returns.
	Data []byte
	// EventSourceARN is the stream's ARN.
	EventSourceARN string
}

// Handler processes one user record. A non-nil error stops the batch at this record, unless it
// is marked Permanent and the processor has a dead-letter queue: then the record goes there and
// the batch goes on.
type Handler func(ctx context.Context, r Record) error

// TimestampFunc extracts a record's origin time (for the E2ELatency metric).
type TimestampFunc func(r Record) (time.Time, bool)

// Processor turns a Handler into a Lambda handler for Kinesis events. It is safe for concurrent
// use (the local ESM emulator invokes one function for several shards at once).
type Processor struct {
	handler Handler
	store   CheckpointStore
	dlq     DeadLetterQueue
	margin  time.Duration
	log     *slog.Logger
	now     func() time.Time
	tsf     TimestampFunc
	m       *metrics
}

type metrics struct {
	reg                     *emf.Registry
	records, failures       *emf.Counter
	deadLettered            *emf.Counter
	batchSize, e2e, lagHist *emf.Histogram
}

// Option configures a Processor.
type Option func(*Processor)

// WithCheckpointStore sets the store used to skip the sub-records of a redelivered aggregate
// that were already processed. Default none: they are processed again (at least once).
func WithCheckpointStore(s CheckpointStore) Option { return func(p *Processor) { p.store = s } }

// WithDeadLetterQueue sets where user records whose handler error is Permanent go. Default none:
// a permanent error stops the batch like a transient one.
func WithDeadLetterQueue(q DeadLetterQueue) Option { return func(p *Processor) { p.dlq = q } }

// WithDeadlineMargin sets how long before the invocation deadline the processor stops taking new
// records (default 500 ms). The handler's context expires at deadline - margin too.
func WithDeadlineMargin(d time.Duration) Option { return func(p *Processor) { p.margin = d } }

// WithLogger sets the logger (default JSON on stderr; stdout carries the EMF metrics).
func WithLogger(l *slog.Logger) Option { return func(p *Processor) { p.log = l } }

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option { return func(p *Processor) { p.now = now } }

// WithMetrics publishes the consumer metrics into reg (namespace NSQK/Consumer, dimension
// Function, by contract) and flushes it at the end of every batch:
//
//   - Records (Count): user records processed successfully;
//   - Failures (Count): batches stopped by a failure (one per failing record);
//   - DeadLetteredRecords (Count): user records failed permanently and sent to the dead-letter
//     queue (each also logged at warning level with its reason);
//   - BatchSize (Count): Kinesis records per invocation, one value per batch;
//   - E2ELatency (Milliseconds): processing time minus the record's origin time from ts, one
//     value per processed user record (records ts cannot read are not measured);
//   - Lag (Milliseconds): at the end of the batch, now minus the ApproximateArrivalTimestamp of
//     the newest record in the batch — what Lambda reports as IteratorAge.
//
// ts may be nil.
func WithMetrics(reg *emf.Registry, ts TimestampFunc) Option {
	return func(p *Processor) {
		p.tsf = ts
		p.m = &metrics{
			reg:          reg,
			records:      reg.Counter("Records", emf.Count),
			failures:     reg.Counter("Failures", emf.Count),
			deadLettered: reg.Counter("DeadLetteredRecords", emf.Count),
			batchSize:    reg.Histogram("BatchSize", emf.Count),
			e2e:          reg.Histogram("E2ELatency", emf.Milliseconds),
			lagHist:      reg.Histogram("Lag", emf.Milliseconds),
		}
	}
}

// NewProcessor returns a Processor calling h for every user record.
func NewProcessor(h Handler, opts ...Option) *Processor {
	p := &Processor{handler: h, margin: 500 * time.Millisecond, now: time.Now}
	for _, o := range opts {
		o(p)
	}
	if p.log == nil {
		p.log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	return p
}

// ErrHeadOfBatch wraps the error Handle returns when the batch's first record failed before
// anything was processed: a function error, so that the event source mapping bisects the batch.
var ErrHeadOfBatch = errors.New("consumer: the first record of the batch failed before any progress")

// ErrDeadline is the failure reported when the processor stops because the invocation deadline
// is near.
var ErrDeadline = errors.New("consumer: stopped before the invocation deadline")

// ShardID returns the shard id part of a Kinesis event record's eventID
// ("shardId-000000000006:4959…" → "shardId-000000000006"), or "" if there is none.
func ShardID(eventID string) string {
	if i := strings.LastIndexByte(eventID, ':'); i > 0 {
		return eventID[:i]
	}
	return ""
}

// Handle processes one Kinesis event. Its signature is a valid Lambda handler's; register it
// with lambda.Start(p.Handle), or lambda.NewHandler(p.Handle) to invoke it locally.
func (p *Processor) Handle(ctx context.Context, ev events.KinesisEvent) (resp events.KinesisEventResponse, _ error) {
	resp.BatchItemFailures = []events.KinesisBatchItemFailure{}
	if p.m != nil {
		p.m.batchSize.Observe(float64(len(ev.Records)))
		defer p.finishMetrics(ev)
	}
	if len(ev.Records) == 0 {
		return resp, nil
	}
	deadline, hasDeadline := ctx.Deadline()
	hctx := ctx
	if hasDeadline {
		var cancel context.CancelFunc
		hctx, cancel = context.WithDeadline(ctx, deadline.Add(-p.margin))
		defer cancel()
	}

	// Only the first record of a delivery can be a partly processed aggregate: the ESM resumes
	// at the record this processor reported. A plain record cannot be partly processed: no read.
	first := &ev.Records[0]
	resume := 0
	if d := first.Kinesis.Data; p.store != nil && len(d) > len(kpl.Magic) && string(d[:len(kpl.Magic)]) == kpl.Magic {
		lctx, cancel := p.storeContext(ctx)
		done, err := p.store.Load(lctx, ShardID(first.EventID), first.Kinesis.SequenceNumber)
		cancel()
		if err != nil {
			p.log.WarnContext(ctx, "checkpoint load failed; processing the aggregate from its start",
				"shard", ShardID(first.EventID), "sequence_number", first.Kinesis.SequenceNumber, "error", err.Error())
		} else {
			resume = max(done, 0)
		}
	}

	var d kpl.Deaggregator
	var users []kpl.UserRecord
	processed := 0 // user records handled successfully in this invocation
	stop := func(i int, kr *events.KinesisEventRecord, shard string, done int, err error) (events.KinesisEventResponse, error) {
		r := p.fail(ctx, resp, kr, shard, done, i == 0 && resume > 0, err)
		if i == 0 && processed == 0 {
			return events.KinesisEventResponse{}, fmt.Errorf("%w: %v", ErrHeadOfBatch, err)
		}
		return r, nil
	}
	for i := range ev.Records {
		kr := &ev.Records[i]
		shard := ShardID(kr.EventID)
		var aggregated bool
		var derr error
		users, aggregated, derr = deaggregate(&d, users[:0], kr.Kinesis.Data)
		skip := 0
		if i == 0 {
			skip = min(resume, len(users))
			if skip > 0 {
				p.log.InfoContext(ctx, "skipping sub-records already processed",
					"shard", shard, "sequence_number", kr.Kinesis.SequenceNumber, "skipped", skip)
			}
		}
		for j := skip; j < len(users); j++ {
			if err := p.checkDeadline(ctx, deadline, hasDeadline); err != nil {
				return stop(i, kr, shard, j, err)
			}
			u := &users[j]
			r := Record{
				ShardID:         shard,
				SequenceNumber:  kr.Kinesis.SequenceNumber,
				SubSequence:     u.SubSequence,
				Aggregated:      aggregated,
				PartitionKey:    kr.Kinesis.PartitionKey,
				ExplicitHashKey: string(u.ExplicitHashKey),
				ArrivalTime:     kr.Kinesis.ApproximateArrivalTimestamp.Time,
				Data:            u.Data,
				EventSourceARN:  kr.EventSourceArn,
			}
			if u.PartitionKey != nil {
				r.PartitionKey = string(u.PartitionKey)
			}
			if err := p.call(hctx, r); err != nil {
				// A permanent error sends the record to the dead-letter queue and counts as progress:
				// the batch goes on. Anything else (or a dead-letter queue that refuses) stops here.
				if err = p.deadLetter(hctx, r, err); err != nil {
					return stop(i, kr, shard, j, err)
				}
				processed++
				continue
			}
			processed++
			if p.m != nil {
				p.m.records.Inc()
				if p.tsf != nil {
					if t, ok := p.tsf(r); ok {
						p.m.e2e.ObserveDuration(p.now().Sub(t))
					}
				}
			}
		}
		if derr != nil {
			return stop(i, kr, shard, len(users),
				fmt.Errorf("aggregate cannot be fully de-aggregated after %d user records: %w", len(users), derr))
		}
		if i == 0 && resume > 0 {
			p.saveCheckpoint(ctx, shard, kr.Kinesis.SequenceNumber, 0) // done with it: forget
		}
	}
	return resp, nil
}

// deaggregate is kpl's Deaggregate with a recover, so that a bug there fails one record instead
// of the whole invocation.
func deaggregate(d *kpl.Deaggregator, dst []kpl.UserRecord, data []byte) (out []kpl.UserRecord, aggregated bool, err error) {
	defer func() {
		if v := recover(); v != nil {
			out, aggregated, err = dst, true, fmt.Errorf("de-aggregation panicked: %v", v)
		}
	}()
	return d.Deaggregate(dst, data)
}

func (p *Processor) checkDeadline(ctx context.Context, deadline time.Time, has bool) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrDeadline, err)
	}
	if has {
		if left := deadline.Sub(p.now()); left < p.margin {
			return fmt.Errorf("%w: %v left, margin %v", ErrDeadline, left.Round(time.Millisecond), p.margin)
		}
	}
	return nil
}

func (p *Processor) call(ctx context.Context, r Record) (err error) {
	defer func() {
		if v := recover(); v != nil {
			p.log.ErrorContext(ctx, "handler panicked", "shard", r.ShardID, "sequence_number", r.SequenceNumber,
				"sub_sequence", r.SubSequence, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			err = fmt.Errorf("handler panicked: %v", v)
		}
	}()
	return p.handler(ctx, r)
}

// deadLetter sends r to the dead-letter queue when err is permanent, and returns nil once the
// queue has it; otherwise it returns the error that stops the batch at r. A failed send is such
// an error: the record is retried, never dropped.
func (p *Processor) deadLetter(ctx context.Context, r Record, err error) error {
	if !IsPermanent(err) {
		return err
	}
	if p.dlq == nil {
		return fmt.Errorf("%w (no dead-letter queue configured: stopping here)", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if serr := p.dlq.Send(sctx, NewDeadLetter(r, err, p.now())); serr != nil {
		return fmt.Errorf("sending the record to the dead-letter queue failed: %v; the record failed with: %w", serr, err)
	}
	p.log.WarnContext(ctx, "user record sent to the dead-letter queue: its handler failed permanently",
		"shard", r.ShardID, "sequence_number", r.SequenceNumber, "sub_sequence", r.SubSequence,
		"partition_key", r.PartitionKey, "reason", err.Error())
	if p.m != nil {
		p.m.deadLettered.Inc()
	}
	return nil
}

// fail reports Kinesis record kr as the batch item failure; done user records of it were
// processed (sub-sequences 0..done-1).
func (p *Processor) fail(ctx context.Context, resp events.KinesisEventResponse, kr *events.KinesisEventRecord,
	shard string, done int, hadCheckpoint bool, err error) events.KinesisEventResponse {
	level := slog.LevelError
	if errors.Is(err, ErrDeadline) {
		level = slog.LevelWarn
	}
	p.log.Log(ctx, level, "record failed; reporting it so that Lambda resumes there",
		"shard", shard, "sequence_number", kr.Kinesis.SequenceNumber, "sub_sequence", done, "error", err.Error())
	if p.m != nil {
		p.m.failures.Inc()
	}
	if p.store != nil && (done > 0 || hadCheckpoint) {
		p.saveCheckpoint(ctx, shard, kr.Kinesis.SequenceNumber, done)
	}
	resp.BatchItemFailures = append(resp.BatchItemFailures, events.KinesisBatchItemFailure{ItemIdentifier: kr.Kinesis.SequenceNumber})
	return resp
}

func (p *Processor) saveCheckpoint(ctx context.Context, shard, seq string, done int) {
	sctx, cancel := p.storeContext(ctx)
	defer cancel()
	if err := p.store.Save(sctx, shard, seq, done); err != nil {
		p.log.WarnContext(ctx, "checkpoint save failed; the aggregate's processed sub-records will be processed again",
			"shard", shard, "sequence_number", seq, "done", done, "error", err.Error())
	}
}

// storeTimeout bounds a checkpoint store call when the invocation leaves more time than that.
const storeTimeout = 2 * time.Second

// storeContext bounds a checkpoint store call: at most storeTimeout, and ending a quarter of the
// deadline margin before the invocation deadline, so that the response still reaches Lambda (a
// timeout would fail the whole batch and discard the progress). It is independent of the
// invocation context's cancellation: a save after the stop must still be attempted.
func (p *Processor) storeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	end := time.Now().Add(storeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Add(-p.margin/4).Before(end) {
		end = d.Add(-p.margin / 4)
	}
	return context.WithDeadline(context.WithoutCancel(ctx), end)
}

func (p *Processor) finishMetrics(ev events.KinesisEvent) {
	var newest time.Time
	for i := range ev.Records {
		if t := ev.Records[i].Kinesis.ApproximateArrivalTimestamp.Time; t.After(newest) {
			newest = t
		}
	}
	if !newest.IsZero() {
		p.m.lagHist.ObserveDuration(p.now().Sub(newest))
	}
	if err := p.m.reg.Flush(); err != nil {
		p.log.Warn("metrics flush failed", "error", err.Error())
	}
}
