package esm

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

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
	Throttles        int64 // invocations throttled (Faults.Throttle)
	Duplicates       int64 // batches delivered a second time (Faults.Duplicate)
	Instances        int64 // function instances started
	InstanceResets   int64 // instances thrown away after a timeout or crash
	Shards           map[string]ShardStats
}

// Mapping is one emulated event source mapping.
type Mapping struct {
	c     KinesisAPI
	newFn Factory
	cfg   Config
	log   *slog.Logger

	streamARN string

	mu      sync.Mutex
	stats   Stats
	changed chan struct{}

	failMu   sync.Mutex
	failFile *os.File
}

// New returns a Mapping of the function newFn starts to the stream. Run starts it;
// configuration errors are reported by Run. See Factory for when instances are started, and
// Shared for a handler whose memory all instances share.
func New(client KinesisAPI, newFn Factory, cfg Config) *Mapping {
	return &Mapping{c: client, newFn: newFn, cfg: cfg, changed: make(chan struct{}),
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
	ln := &lane{q: q}
	for {
		// "If you configure a MaximumBatchingWindowInSeconds, the next batching window begins
		// as soon as the previous function invocation completes" (Lambda developer guide, "How
		// Lambda processes records from stream and queue-based event sources", batching).
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
		m.process(ctx, sr, batch, ln, log)
		if ctx.Err() != nil {
			return
		}
	}
}
