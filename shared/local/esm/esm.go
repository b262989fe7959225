// Package esm emulates a Lambda event source mapping (ESM) for a Kinesis stream, locally,
// against kinesalite or kinesis-mock: it polls every shard (parents before children after a
// reshard), builds batches, invokes a function through aws-lambda-go's own JSON handler path
// (lambda.Handler.Invoke, e.g. lambda.NewHandler(fn)) and applies the ESM's error handling.
//
// Semantics implemented, with their sources (Lambda developer guide unless noted):
//
//   - Batching ("Lambda event source mappings", "Using AWS Lambda with Amazon Kinesis"): a batch
//     holds records of one shard, in order, at most BatchSize (default 100, max 10,000) and at
//     most 6 MiB of event payload (the synchronous invocation payload limit). With
//     MaximumBatchingWindow 0 the function is invoked with what is available; otherwise records
//     are gathered until the batch is full or the window (which begins when the previous
//     invocation completes) has passed.
//   - Shards: each shard is read in order; a child shard is read only after all its parents were
//     read to their end (GetRecords returned no NextShardIterator) and their records handled.
//     Shards present when the mapping starts use StartingPosition (TRIM_HORIZON, LATEST or
//     AT_TIMESTAMP); shards that appear later (children) are read from TRIM_HORIZON.
//   - ParallelizationFactor (1–10): concurrent batches per shard, records assigned to lanes by a
//     hash of their partition key, so that order is kept per partition key ("New AWS Lambda
//     scaling controls for Kinesis and DynamoDB event sources", AWS Compute Blog). The outer
//     (Kinesis) partition key is what counts: KPL aggregates carry one for all their records.
//   - ReportBatchItemFailures ("Configuring partial batch response with Kinesis Data Streams and
//     Lambda"): the checkpoint is the reported item with the lowest sequence number and Lambda
//     retries the records from it; an empty/null list or response is a complete success; an
//     empty/null itemIdentifier or a wrong key name is a complete failure (an identifier not in
//     the batch too, as in LocalStack's poller). Without ReportBatchItemFailures the response is
//     ignored: a returned failure list counts as success (logged as a warning here).
//   - BisectBatchOnFunctionError (same page and "Retain discarded batch records for a Kinesis
//     Data Streams event source"): on a function error the batch is split in two and the halves
//     retried, first half first; splitting does not count towards the retry quota. With a
//     partial response the batch is split at the returned sequence number and only the rest is
//     retried. When that rest fails again at its first record (no progress) this emulator treats
//     it as a function error and bisects, so that a poison record ends alone — the docs do not
//     say what Lambda does there.
//   - MaximumRetryAttempts (-1 = infinite, the default; 0–10,000): retries after the first
//     attempt, so a batch is invoked at most MaximumRetryAttempts+1 times before it is discarded.
//     A partial response that made progress counts as a failed attempt for the rest.
//   - MaximumRecordAge (-1/0 = infinite; 60 s–7 days in AWS): records older than this when a
//     batch is about to be invoked (ApproximateArrivalTimestamp) are discarded without invocation.
//   - On-failure destination: each discarded (sub-)batch is one JSON line in the OnFailure file,
//     the invocation record Lambda sends to SQS/SNS (example in "Using AWS Lambda with Amazon
//     Kinesis"): requestContext {requestId, functionArn, condition, approximateInvokeCount},
//     responseContext {statusCode, executedVersion, functionError}, version "1.0", timestamp,
//     KinesisBatchInfo {shardId, startSequenceNumber, endSequenceNumber,
//     approximateArrivalOfFirstRecord, approximateArrivalOfLastRecord, batchSize, streamArn}.
//     condition is "RetryAttemptsExhausted", or "RecordAgeExceeded" for expired records (the
//     value other emulators use; the AWS docs show only the first).
//   - Function timeout: the invocation context carries FunctionTimeout as its deadline; an
//     invocation still running then is a function error ("TimedOut"). Nothing can kill a
//     goroutine, so the emulator waits for it to return before retrying (real Lambda kills the
//     sandbox).
//
// Not emulated: enhanced fan-out, filtering, tumbling windows, throttling, the 5-minute iterator
// expiry beyond re-acquiring an iterator, checkpoints that survive a restart (a Mapping starts
// from StartingPosition every time).
package esm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/nsqk/nsqk/shared/consumer"
)

// StartingPosition is where a mapping starts reading the shards present at its start.
type StartingPosition string

// Starting positions.
const (
	TrimHorizon StartingPosition = "TRIM_HORIZON"
	Latest      StartingPosition = "LATEST"
	AtTimestamp StartingPosition = "AT_TIMESTAMP"
)

// RetryForever is MaximumRetryAttempts = -1: retry until the records expire (the AWS default).
const RetryForever = -1

// MaxPayload is Lambda's synchronous invocation payload limit (6 MB).
const MaxPayload = 6 << 20

// KinesisAPI is the part of the Kinesis client a Mapping uses (*kinesis.Client has it).
type KinesisAPI interface {
	DescribeStreamSummary(context.Context, *kinesis.DescribeStreamSummaryInput, ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error)
	ListShards(context.Context, *kinesis.ListShardsInput, ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
	GetShardIterator(context.Context, *kinesis.GetShardIteratorInput, ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error)
	GetRecords(context.Context, *kinesis.GetRecordsInput, ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error)
}

// Config configures a Mapping. Zero values take the defaults noted; MaximumRetryAttempts is the
// exception: its zero means no retries, RetryForever (-1) is the AWS default.
type Config struct {
	Stream       string // stream name (required)
	FunctionName string // for the function ARN in invocation records; default "function"

	BatchSize         int           // default 100, at most 10,000
	MaxBatchingWindow time.Duration // default 0, at most 5 minutes

	StartingPosition          StartingPosition // default TRIM_HORIZON
	StartingPositionTimestamp time.Time        // for AT_TIMESTAMP

	ReportBatchItemFailures    bool
	BisectBatchOnFunctionError bool
	MaximumRetryAttempts       int           // -1 (RetryForever) .. 10,000; 0 = no retry
	MaximumRecordAge           time.Duration // <= 0: infinite
	OnFailure                  string        // JSONL file receiving invocation records; "" = discard (logged)

	FunctionTimeout       time.Duration // invocation deadline; default 3 s (Lambda's default)
	ParallelizationFactor int           // lanes per shard, 1..10; default 1

	PollInterval         time.Duration // wait after an empty GetRecords; default 200 ms
	ShardRefreshInterval time.Duration // ListShards period; default 1 s
	RetryBackoff         time.Duration // first retry delay, doubling up to 5 s; default 100 ms

	Logger *slog.Logger     // default: JSON to stderr
	Now    func() time.Time // clock for MaximumRecordAge and timestamps; default time.Now
}

func (c *Config) setDefaults() error {
	if c.Stream == "" {
		return errors.New("esm: Config.Stream is required")
	}
	if c.FunctionName == "" {
		c.FunctionName = "function"
	}
	if c.BatchSize == 0 {
		c.BatchSize = 100
	}
	if c.BatchSize < 1 || c.BatchSize > 10000 {
		return fmt.Errorf("esm: BatchSize %d not in 1..10000", c.BatchSize)
	}
	if c.MaxBatchingWindow < 0 || c.MaxBatchingWindow > 5*time.Minute {
		return fmt.Errorf("esm: MaxBatchingWindow %v not in 0..5m", c.MaxBatchingWindow)
	}
	switch c.StartingPosition {
	case "":
		c.StartingPosition = TrimHorizon
	case TrimHorizon, Latest:
	case AtTimestamp:
		if c.StartingPositionTimestamp.IsZero() {
			return errors.New("esm: AT_TIMESTAMP needs StartingPositionTimestamp")
		}
	default:
		return fmt.Errorf("esm: unknown StartingPosition %q", c.StartingPosition)
	}
	if c.MaximumRetryAttempts < -1 || c.MaximumRetryAttempts > 10000 {
		return fmt.Errorf("esm: MaximumRetryAttempts %d not in -1..10000", c.MaximumRetryAttempts)
	}
	if c.FunctionTimeout <= 0 {
		c.FunctionTimeout = 3 * time.Second
	}
	if c.ParallelizationFactor == 0 {
		c.ParallelizationFactor = 1
	}
	if c.ParallelizationFactor < 1 || c.ParallelizationFactor > 10 {
		return fmt.Errorf("esm: ParallelizationFactor %d not in 1..10", c.ParallelizationFactor)
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 200 * time.Millisecond
	}
	if c.ShardRefreshInterval <= 0 {
		c.ShardRefreshInterval = time.Second
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = 100 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Shard states in ShardStats.State.
const (
	ShardWaiting  = "waiting"  // known, waiting for its parents
	ShardReading  = "reading"  // iterator acquired, being read
	ShardFinished = "finished" // read to its end and every record handled
)

// ShardStats describes one shard.
type ShardStats struct {
	Parents []string
	State   string
	// Checkpoint is the sequence number up to which every record has been handled (processed
	// successfully or discarded to the on-failure destination).
	Checkpoint         string
	RecordsRead        int64
	RecordsDone        int64
	MillisBehindLatest int64
	// FinishedAt is when the shard became finished (zero before).
	FinishedAt time.Time
	// FirstInvokeAt is when a batch of this shard was first invoked (zero before).
	FirstInvokeAt time.Time
}

// Stats is a snapshot of a Mapping's counters.
type Stats struct {
	Batches          int64 // batches built from the stream
	Invocations      int64 // function invocations (retries and halves included)
	FunctionErrors   int64 // invocations that returned an error, panicked or timed out
	PartialFailures  int64 // invocations that returned a valid, non-empty batchItemFailures
	Retries          int64 // re-invocations of a batch or of what remained of it
	Bisections       int64
	RecordsRead      int64
	RecordsDone      int64 // handled: processed, or sent to the on-failure destination
	OnFailureRecords int64 // Kinesis records discarded to the on-failure destination
	OnFailureBatches int64 // invocation records written
	Shards           map[string]ShardStats
}

// Mapping is one emulated event source mapping.
type Mapping struct {
	c   KinesisAPI
	fn  any
	cfg Config
	log *slog.Logger

	streamARN string

	mu      sync.Mutex
	stats   Stats
	changed chan struct{}

	failMu   sync.Mutex
	failFile *os.File

	sharedMu sync.Mutex // serialises calls of a shared lambda.Handler
}

// New returns a Mapping of fn to the stream. Run starts it; configuration errors are reported by
// Run.
//
// fn is what lambda.Start accepts: a handler function such as p.Handle (preferred), or a
// lambda.Handler. A function is wrapped with lambda.NewHandler once per lane — one "execution
// environment" per concurrent batch, as in Lambda — and invoked through its Invoke, aws-lambda-go's
// own JSON path. A lambda.Handler is shared by all lanes and invoked one call at a time: the
// handlers lambda.NewHandler builds are not safe for concurrent Invoke calls (Invoke returns the
// bytes of a pooled buffer after putting it back in the pool, aws-lambda-go v1.55.1
// lambda/handler.go), which the Lambda runtime never does but an emulator with several shards
// would.
func New(client KinesisAPI, fn any, cfg Config) *Mapping {
	return &Mapping{c: client, fn: fn, cfg: cfg, changed: make(chan struct{}),
		stats: Stats{Shards: map[string]ShardStats{}}}
}

// StreamARN returns the stream's ARN once Run has described the stream.
func (m *Mapping) StreamARN() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.streamARN
}

// Stats returns a snapshot.
func (m *Mapping) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snapshotLocked()
}

func (m *Mapping) snapshotLocked() Stats {
	s := m.stats
	s.Shards = make(map[string]ShardStats, len(m.stats.Shards))
	for k, v := range m.stats.Shards {
		v.Parents = slices.Clone(v.Parents)
		s.Shards[k] = v
	}
	return s
}

// Wait blocks until cond holds for the mapping's stats, or ctx ends.
func (m *Mapping) Wait(ctx context.Context, cond func(Stats) bool) (Stats, error) {
	for {
		m.mu.Lock()
		s := m.snapshotLocked()
		ch := m.changed
		m.mu.Unlock()
		if cond(s) {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return s, ctx.Err()
		case <-ch:
		}
	}
}

// update changes the stats under the lock and wakes waiters.
func (m *Mapping) update(f func(*Stats)) {
	m.mu.Lock()
	f(&m.stats)
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
}

func (m *Mapping) updateShard(id string, f func(*ShardStats)) {
	m.update(func(s *Stats) {
		sh := s.Shards[id]
		f(&sh)
		s.Shards[id] = sh
	})
}

// laneHandler returns the handler a lane invokes and, for a shared lambda.Handler, the lock that
// serialises its calls.
func (m *Mapping) laneHandler() (lambda.Handler, *sync.Mutex) {
	if h, ok := m.fn.(lambda.Handler); ok {
		return h, &m.sharedMu
	}
	return lambda.NewHandler(m.fn), nil
}

// shard is the discovery state of one shard.
type shard struct {
	id       string
	parents  []string
	initial  bool // present at the mapping's start
	started  bool
	finished bool
}

// Run polls the stream until ctx ends, then waits for in-flight invocations and returns nil. It
// returns an error for an invalid Config or a stream that cannot be described.
func (m *Mapping) Run(ctx context.Context) error {
	if err := m.cfg.setDefaults(); err != nil {
		return err
	}
	m.log = m.cfg.Logger.With("mapping", m.cfg.FunctionName, "stream", m.cfg.Stream)
	actx, cancel := apiCtx(ctx)
	out, err := m.c.DescribeStreamSummary(actx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(m.cfg.Stream)})
	cancel()
	if err != nil {
		return fmt.Errorf("esm: describe stream %s: %w", m.cfg.Stream, err)
	}
	m.mu.Lock()
	m.streamARN = aws.ToString(out.StreamDescriptionSummary.StreamARN)
	m.mu.Unlock()
	if m.cfg.OnFailure != "" {
		f, err := os.OpenFile(m.cfg.OnFailure, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("esm: on-failure destination: %w", err)
		}
		m.failFile = f
		defer f.Close()
	}

	shards := map[string]*shard{}
	var wg sync.WaitGroup
	finished := make(chan string, 16)
	first := true
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case id := <-finished:
			shards[id].finished = true
		case <-timer.C:
			list, err := m.listShards(ctx)
			if err != nil {
				if ctx.Err() == nil {
					m.log.Warn("ListShards failed", "error", err.Error())
				}
			} else {
				for _, s := range list {
					id := aws.ToString(s.ShardId)
					if _, ok := shards[id]; ok {
						continue
					}
					sh := &shard{id: id, initial: first}
					for _, p := range []*string{s.ParentShardId, s.AdjacentParentShardId} {
						if p != nil && *p != "" {
							sh.parents = append(sh.parents, *p)
						}
					}
					shards[id] = sh
					m.updateShard(id, func(st *ShardStats) { st.Parents = sh.parents; st.State = ShardWaiting })
				}
				first = false
			}
			timer.Reset(m.cfg.ShardRefreshInterval)
		}
		// Start every shard whose parents are done (or unknown: trimmed from the stream).
		for _, sh := range shards {
			if sh.started {
				continue
			}
			ready := true
			for _, p := range sh.parents {
				if ps, ok := shards[p]; ok && !ps.finished {
					ready = false
				}
			}
			if !ready {
				continue
			}
			sh.started = true
			pos := m.cfg.StartingPosition
			if !sh.initial {
				pos = TrimHorizon
			}
			wg.Add(1)
			go func(id string) {
				defer wg.Done()
				if m.runShard(ctx, id, pos) {
					select {
					case finished <- id:
					case <-ctx.Done():
					}
				}
			}(sh.id)
		}
	}
}

// apiCtx is the context of one Kinesis API call: not cancelled when the mapping stops, only
// bounded. kinesalite crashes (an unhandled ECONNRESET in its request handler) when a client
// aborts a request in flight, which cancelling the context of a running call does; its calls
// never block, so letting them finish costs nothing.
func apiCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

func (m *Mapping) listShards(ctx context.Context) ([]types.Shard, error) {
	var all []types.Shard
	in := &kinesis.ListShardsInput{StreamName: aws.String(m.cfg.Stream)}
	for {
		actx, cancel := apiCtx(ctx)
		out, err := m.c.ListShards(actx, in)
		cancel()
		if err != nil {
			return nil, err
		}
		all = append(all, out.Shards...)
		if out.NextToken == nil {
			return all, nil
		}
		in = &kinesis.ListShardsInput{NextToken: out.NextToken}
	}
}

// item is a record with its position in the shard's read order.
type item struct {
	rec types.Record
	idx int64
}

// shardRun is the reading state of one shard.
type shardRun struct {
	id    string
	lanes []*queue

	mu    sync.Mutex
	base  int64 // idx of done[0]
	done  []bool
	seqs  []string
	next  int64
	first bool // no batch invoked yet
}

// markDone records that items are handled and advances the checkpoint.
func (m *Mapping) markDone(sr *shardRun, items []item) {
	sr.mu.Lock()
	for _, it := range items {
		sr.done[it.idx-sr.base] = true
	}
	n := 0
	for n < len(sr.done) && sr.done[n] {
		n++
	}
	var cp string
	if n > 0 {
		cp = sr.seqs[n-1]
		sr.done, sr.seqs, sr.base = sr.done[n:], sr.seqs[n:], sr.base+int64(n)
	}
	sr.mu.Unlock()
	m.update(func(s *Stats) {
		s.RecordsDone += int64(len(items))
		sh := s.Shards[sr.id]
		sh.RecordsDone += int64(len(items))
		if cp != "" {
			sh.Checkpoint = cp
		}
		s.Shards[sr.id] = sh
	})
}

// runShard reads one shard to its end (true) or until ctx ends (false).
func (m *Mapping) runShard(ctx context.Context, id string, pos StartingPosition) bool {
	log := m.log.With("shard", id)
	P := m.cfg.ParallelizationFactor
	sr := &shardRun{id: id, first: true}
	capacity := max(2*m.cfg.BatchSize, 500)
	var lanes sync.WaitGroup
	for range P {
		q := newQueue(capacity)
		sr.lanes = append(sr.lanes, q)
		lanes.Add(1)
		go func() {
			defer lanes.Done()
			m.runLane(ctx, sr, q, log)
		}()
	}
	ended := m.readShard(ctx, sr, pos, log)
	for _, q := range sr.lanes {
		q.close()
	}
	lanes.Wait()
	if !ended || ctx.Err() != nil {
		return false
	}
	m.updateShard(id, func(st *ShardStats) { st.State = ShardFinished; st.FinishedAt = time.Now() })
	log.Info("shard finished")
	return true
}

func (m *Mapping) iterator(ctx context.Context, id string, pos StartingPosition, after string) (string, error) {
	in := &kinesis.GetShardIteratorInput{StreamName: aws.String(m.cfg.Stream), ShardId: aws.String(id)}
	switch {
	case after != "":
		in.ShardIteratorType = types.ShardIteratorTypeAfterSequenceNumber
		in.StartingSequenceNumber = aws.String(after)
	case pos == Latest:
		in.ShardIteratorType = types.ShardIteratorTypeLatest
	case pos == AtTimestamp:
		in.ShardIteratorType = types.ShardIteratorTypeAtTimestamp
		in.Timestamp = aws.Time(m.cfg.StartingPositionTimestamp)
	default:
		in.ShardIteratorType = types.ShardIteratorTypeTrimHorizon
	}
	actx, cancel := apiCtx(ctx)
	defer cancel()
	out, err := m.c.GetShardIterator(actx, in)
	if err != nil {
		return "", err
	}
	return aws.ToString(out.ShardIterator), nil
}

// readShard polls the shard and dispatches records to the lanes; true when the shard ended.
func (m *Mapping) readShard(ctx context.Context, sr *shardRun, pos StartingPosition, log *slog.Logger) bool {
	var it, lastSeq string
	backoff := m.cfg.PollInterval
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	limit := int32(min(10000, m.cfg.BatchSize*len(sr.lanes)))
	for {
		if ctx.Err() != nil {
			return false
		}
		if it == "" {
			var err error
			if it, err = m.iterator(ctx, sr.id, pos, lastSeq); err != nil {
				if ctx.Err() == nil {
					log.Warn("GetShardIterator failed", "error", err.Error())
				}
				if !wait(backoff) {
					return false
				}
				continue
			}
			m.updateShard(sr.id, func(st *ShardStats) { st.State = ShardReading })
		}
		actx, cancel := apiCtx(ctx)
		out, err := m.c.GetRecords(actx, &kinesis.GetRecordsInput{ShardIterator: aws.String(it), Limit: aws.Int32(limit)})
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			var expired *types.ExpiredIteratorException
			if errors.As(err, &expired) {
				it = "" // re-acquire after the last record read
				continue
			}
			log.Warn("GetRecords failed", "error", err.Error())
			if !wait(backoff) {
				return false
			}
			continue
		}
		recs := out.Records
		if len(recs) > 0 {
			lastSeq = aws.ToString(recs[len(recs)-1].SequenceNumber)
			sr.mu.Lock()
			perLane := make([][]item, len(sr.lanes))
			for _, r := range recs {
				idx := sr.next
				sr.next++
				sr.done = append(sr.done, false)
				sr.seqs = append(sr.seqs, aws.ToString(r.SequenceNumber))
				l := 0
				if len(sr.lanes) > 1 {
					h := fnv.New32a()
					h.Write([]byte(aws.ToString(r.PartitionKey)))
					l = int(h.Sum32() % uint32(len(sr.lanes)))
				}
				perLane[l] = append(perLane[l], item{r, idx})
			}
			sr.mu.Unlock()
			behind := aws.ToInt64(out.MillisBehindLatest)
			m.update(func(s *Stats) {
				s.RecordsRead += int64(len(recs))
				sh := s.Shards[sr.id]
				sh.RecordsRead += int64(len(recs))
				sh.MillisBehindLatest = behind
				s.Shards[sr.id] = sh
			})
			for l, items := range perLane {
				if len(items) > 0 && !sr.lanes[l].push(ctx, items) {
					return false
				}
			}
		} else {
			behind := aws.ToInt64(out.MillisBehindLatest)
			m.updateShard(sr.id, func(st *ShardStats) { st.MillisBehindLatest = behind })
		}
		if out.NextShardIterator == nil {
			return true // closed shard read to its end
		}
		it = *out.NextShardIterator
		if len(recs) == 0 && !wait(m.cfg.PollInterval) {
			return false
		}
	}
}

// runLane builds batches from one lane's queue and processes them until the queue is closed and
// drained, or ctx ends.
func (m *Mapping) runLane(ctx context.Context, sr *shardRun, q *queue, log *slog.Logger) {
	h, hmu := m.laneHandler()
	for {
		var windowEnd time.Time
		if m.cfg.MaxBatchingWindow > 0 {
			windowEnd = time.Now().Add(m.cfg.MaxBatchingWindow)
		}
		if !q.waitFor(ctx, 1, time.Time{}) {
			return
		}
		if !windowEnd.IsZero() && !q.waitFor(ctx, m.cfg.BatchSize, windowEnd) && ctx.Err() != nil {
			return
		}
		batch := q.take(m.cfg.BatchSize, MaxPayload-1024)
		if len(batch) == 0 {
			continue
		}
		m.update(func(s *Stats) { s.Batches++ })
		m.process(ctx, sr, batch, h, hmu, log)
		if ctx.Err() != nil {
			return
		}
	}
}

// outcome of one invocation.
type outcome int

const (
	succeeded outcome = iota
	partial           // valid batchItemFailures: failed from index k on
	failed            // function error, or a response Lambda treats as a complete failure
)

type sub struct {
	items    []item
	attempts int // failed invocations of this (sub-)batch
}

// process applies the ESM's error handling to one batch until every record is handled (or ctx
// ends).
func (m *Mapping) process(ctx context.Context, sr *shardRun, batch []item, h lambda.Handler, hmu *sync.Mutex, log *slog.Logger) {
	pending := []sub{{items: batch}}
	var last invocation
	for len(pending) > 0 {
		if ctx.Err() != nil {
			return
		}
		cur := &pending[0]
		if age := m.cfg.MaximumRecordAge; age > 0 {
			now := m.cfg.Now()
			cut := 0
			for cut < len(cur.items) && now.Sub(arrival(cur.items[cut].rec)) > age {
				cut++
			}
			if cut > 0 {
				m.discard(sr, cur.items[:cut], "RecordAgeExceeded", cur.attempts, last, log)
				cur.items = cur.items[cut:]
				if len(cur.items) == 0 {
					pending = pending[1:]
					continue
				}
			}
		}
		last = m.invoke(ctx, sr, cur.items, h, hmu, log)
		if ctx.Err() != nil && last.outcome != succeeded {
			return // shutting down: not a function failure
		}
		k := 0
		switch last.outcome {
		case succeeded:
			m.markDone(sr, cur.items)
			pending = pending[1:]
			continue
		case partial:
			k = last.failedAt
		}
		if k > 0 { // progress: checkpoint before the failed record, retry the rest
			m.markDone(sr, cur.items[:k])
			cur.items = cur.items[k:]
		} else if m.cfg.BisectBatchOnFunctionError && len(cur.items) > 1 {
			n, h := len(cur.items), len(cur.items)/2
			halves := []sub{{items: cur.items[:h]}, {items: cur.items[h:]}}
			pending = append(halves, pending[1:]...)
			m.update(func(s *Stats) { s.Bisections++ })
			log.Info("bisecting batch", "size", n, "first_sequence_number", aws.ToString(halves[0].items[0].rec.SequenceNumber))
			continue
		}
		cur.attempts++
		if limit := m.cfg.MaximumRetryAttempts; limit >= 0 && cur.attempts > limit {
			m.discard(sr, cur.items, "RetryAttemptsExhausted", cur.attempts, last, log)
			pending = pending[1:]
			continue
		}
		m.update(func(s *Stats) { s.Retries++ })
		delay := m.cfg.RetryBackoff << min(cur.attempts-1, 16)
		delay = min(delay, 5*time.Second)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

type invocation struct {
	outcome   outcome
	failedAt  int
	errorType string // "" | "Unhandled" | "TimedOut"
	invoked   bool
}

func (m *Mapping) invoke(ctx context.Context, sr *shardRun, items []item, h lambda.Handler, hmu *sync.Mutex, log *slog.Logger) invocation {
	recs := make([]types.Record, len(items))
	seqs := make([]string, len(items))
	for i, it := range items {
		recs[i] = it.rec
		seqs[i] = aws.ToString(it.rec.SequenceNumber)
	}
	payload, err := BuildEvent(sr.id, m.StreamARN(), recs, EventOptions{})
	if err != nil {
		log.Error("cannot build the event", "error", err.Error())
		return invocation{outcome: failed, errorType: "Unhandled"}
	}
	sr.mu.Lock()
	firstInvoke := sr.first
	sr.first = false
	sr.mu.Unlock()
	now := time.Now()
	m.update(func(s *Stats) {
		s.Invocations++
		if firstInvoke {
			sh := s.Shards[sr.id]
			sh.FirstInvokeAt = now
			s.Shards[sr.id] = sh
		}
	})
	if hmu != nil {
		hmu.Lock()
	}
	res := consumer.Invoke(ctx, h, payload, m.cfg.FunctionName, m.cfg.FunctionTimeout)
	if hmu != nil {
		hmu.Unlock()
	}
	inv := invocation{invoked: true, errorType: res.ErrorType}
	if res.Err != nil {
		if ctx.Err() == nil {
			m.update(func(s *Stats) { s.FunctionErrors++ })
			log.Warn("function error", "request_id", res.RequestID, "type", res.ErrorType, "error", res.Err.Error(),
				"first_sequence_number", seqs[0], "size", len(items))
		}
		inv.outcome = failed
		return inv
	}
	idx, whole, reason := partialResult(res.Response, seqs)
	if !m.cfg.ReportBatchItemFailures {
		if idx >= 0 || whole {
			log.Warn("the function reported batch item failures but ReportBatchItemFailures is off: Lambda ignores them and the batch counts as a success",
				"request_id", res.RequestID)
		}
		inv.outcome = succeeded
		return inv
	}
	switch {
	case whole:
		log.Warn("invalid partial batch response: the whole batch failed", "reason", reason, "request_id", res.RequestID)
		inv.outcome = failed
	case idx >= 0:
		m.update(func(s *Stats) { s.PartialFailures++ })
		log.Info("partial batch failure", "failed_sequence_number", seqs[idx], "index", idx, "size", len(items))
		inv.outcome, inv.failedAt = partial, idx
	default:
		inv.outcome = succeeded
	}
	return inv
}

// FailureRecord is the invocation record Lambda sends to an on-failure destination for a
// Kinesis event source (one JSON line per record in the OnFailure file).
type FailureRecord struct {
	RequestContext   RequestContext  `json:"requestContext"`
	ResponseContext  ResponseContext `json:"responseContext"`
	Version          string          `json:"version"`
	Timestamp        string          `json:"timestamp"`
	KinesisBatchInfo BatchInfo       `json:"KinesisBatchInfo"`
}

// RequestContext of a FailureRecord.
type RequestContext struct {
	RequestID              string `json:"requestId"`
	FunctionArn            string `json:"functionArn"`
	Condition              string `json:"condition"`
	ApproximateInvokeCount int    `json:"approximateInvokeCount"`
}

// ResponseContext of a FailureRecord: the last invocation's.
type ResponseContext struct {
	StatusCode      int    `json:"statusCode"`
	ExecutedVersion string `json:"executedVersion"`
	FunctionError   string `json:"functionError,omitempty"`
}

// BatchInfo locates the discarded records in the stream.
type BatchInfo struct {
	ShardID                         string `json:"shardId"`
	StartSequenceNumber             string `json:"startSequenceNumber"`
	EndSequenceNumber               string `json:"endSequenceNumber"`
	ApproximateArrivalOfFirstRecord string `json:"approximateArrivalOfFirstRecord"`
	ApproximateArrivalOfLastRecord  string `json:"approximateArrivalOfLastRecord"`
	BatchSize                       int    `json:"batchSize"`
	StreamArn                       string `json:"streamArn"`
}

const isoMillis = "2006-01-02T15:04:05.000Z"

func (m *Mapping) discard(sr *shardRun, items []item, condition string, invokes int, last invocation, log *slog.Logger) {
	first, lastRec := items[0].rec, items[len(items)-1].rec
	fr := FailureRecord{
		RequestContext: RequestContext{
			RequestID:              consumer.NewUUID(),
			FunctionArn:            consumer.FunctionARN(m.cfg.FunctionName),
			Condition:              condition,
			ApproximateInvokeCount: invokes,
		},
		ResponseContext: ResponseContext{ExecutedVersion: "$LATEST"},
		Version:         "1.0",
		Timestamp:       m.cfg.Now().UTC().Format(isoMillis),
		KinesisBatchInfo: BatchInfo{
			ShardID:                         sr.id,
			StartSequenceNumber:             aws.ToString(first.SequenceNumber),
			EndSequenceNumber:               aws.ToString(lastRec.SequenceNumber),
			ApproximateArrivalOfFirstRecord: arrival(first).UTC().Format(isoMillis),
			ApproximateArrivalOfLastRecord:  arrival(lastRec).UTC().Format(isoMillis),
			BatchSize:                       len(items),
			StreamArn:                       m.StreamARN(),
		},
	}
	if last.invoked {
		fr.ResponseContext.StatusCode = 200
		if last.errorType != "" {
			fr.ResponseContext.FunctionError = "Unhandled"
		}
	}
	log.Warn("discarding records to the on-failure destination", "condition", condition,
		"start_sequence_number", fr.KinesisBatchInfo.StartSequenceNumber, "end_sequence_number", fr.KinesisBatchInfo.EndSequenceNumber,
		"records", len(items), "invocations", invokes, "destination", m.cfg.OnFailure)
	if m.failFile != nil {
		line, _ := json.Marshal(fr)
		m.failMu.Lock()
		_, err := m.failFile.Write(append(line, '\n'))
		m.failMu.Unlock()
		if err != nil {
			log.Error("on-failure destination write failed", "error", err.Error())
		}
	}
	m.update(func(s *Stats) {
		s.OnFailureRecords += int64(len(items))
		s.OnFailureBatches++
	})
	m.markDone(sr, items)
}

// ReadOnFailure reads the invocation records of an OnFailure file.
func ReadOnFailure(path string) ([]FailureRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []FailureRecord
	dec := json.NewDecoder(bytes.NewReader(b))
	for dec.More() {
		var fr FailureRecord
		if err := dec.Decode(&fr); err != nil {
			return out, err
		}
		out = append(out, fr)
	}
	return out, nil
}
