// Package logread reads a Kinesis data stream back in order: every shard (or the shards holding
// some partition keys), parents before children so that a key's records come out in order across
// splits and merges, KPL aggregates expanded into user records with their sub-sequence numbers.
//
// It honours the read limits (backing off on throttling), renews expired shard iterators from the
// last sequence number read, and never hands out a record twice or skips one.
package logread

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"
	"github.com/cenkalti/backoff/v5"

	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/shardmap"
)

// Kinesis is the part of the Kinesis API a Reader uses.
type Kinesis interface {
	ListShards(context.Context, *kinesis.ListShardsInput, ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
	GetShardIterator(context.Context, *kinesis.GetShardIteratorInput, ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error)
	GetRecords(context.Context, *kinesis.GetRecordsInput, ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error)
}

// Options selects what a Reader reads.
type Options struct {
	// Stream is the stream's name or ARN.
	Stream string
	// From is where reading starts in the shards that exist when Run starts (default
	// TRIM_HORIZON). Shards that appear later are read from their start.
	From Position
	// To, if set, ends each shard at the first record that arrived after it.
	To time.Time
	// Follow keeps reading new records and new child shards until the context ends. Without it
	// each shard ends once it has caught up with the tip (or is closed, or reached To).
	Follow bool
	// Shards, if set, reads only these shards (and not their children).
	Shards []string
	// Keys, if set, hands out only user records with one of these partition keys and reads only
	// the shards whose hash key range holds one of them.
	Keys []string
	// KeyShards, if set, reads only the shards whose hash key range holds one of these keys,
	// and hands out all their records (for records that do not carry the key themselves).
	KeyShards []string
	// PollInterval is the wait before polling a shard that had nothing new (default 1 s).
	PollInterval time.Duration
	// MinInterval spaces the GetRecords calls of one shard (default 200 ms: Kinesis allows five
	// per second per shard, shared by every reader of the stream).
	MinInterval time.Duration
	// Limit is GetRecords' Limit (default 10000).
	Limit int32
	// Warn receives problems that do not stop reading: an aggregate that could only be partly
	// expanded, an iterator renewed, throttling. Called from the reading goroutines, serialized.
	Warn func(msg string)
	// Flush, if set, is called after each page of records has been handed out.
	Flush func() error
	// AtTimestampTimeout bounds an AT_TIMESTAMP GetShardIterator call (default 5 s); past it
	// the shard is read from the trim horizon, skipping older records.
	AtTimestampTimeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Record is one user record. Its slices alias buffers that are reused after the callback returns.
type Record struct {
	ShardID        string
	SequenceNumber string
	// SubSequence is the user record's index in its aggregate; 0 for a plain record.
	SubSequence int
	// Aggregated reports whether the Kinesis record was a KPL aggregate.
	Aggregated bool
	// PartitionKey is the user record's key; for a plain record, the Kinesis record's key.
	PartitionKey []byte
	// ExplicitHashKey is the user record's explicit hash key, nil when it has none (GetRecords
	// does not return a plain record's explicit hash key).
	ExplicitHashKey []byte
	Arrival         time.Time
	Data            []byte
}

// Stats is a snapshot of a Reader's progress.
type Stats struct {
	UserRecords, KinesisRecords int64
	ShardsDone, ShardsTotal     int
	// Behind is the largest MillisBehindLatest of the shards being read.
	Behind                              time.Duration
	Throttled, IteratorsRenewed, Warned int64
}

// ErrStreamNotFound is returned (wrapped) when the stream does not exist.
var ErrStreamNotFound = errors.New("stream not found")

// Reader reads a stream. Use it once.
type Reader struct {
	kc     Kinesis
	o      Options
	hashes []shardmap.Hash
	keys   map[string]bool

	emitMu  sync.Mutex
	emit    func(*Record) error
	started time.Time

	userRecs, kinRecs, throttled, renewed, warned atomic.Int64
	statMu                                        sync.Mutex
	done, total                                   int
	behind                                        map[string]int64
}

// New checks the options and returns a Reader.
func New(kc Kinesis, o Options) (*Reader, error) {
	if o.Stream == "" {
		return nil, errors.New("logread: a stream name or ARN is required")
	}
	if o.From.Type == "" {
		o.From = TrimHorizon
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.MinInterval <= 0 {
		o.MinInterval = 200 * time.Millisecond
	}
	if o.AtTimestampTimeout <= 0 {
		o.AtTimestampTimeout = 5 * time.Second
	}
	if o.Limit <= 0 {
		o.Limit = 10000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Warn == nil {
		o.Warn = func(string) {}
	}
	r := &Reader{kc: kc, o: o, behind: map[string]int64{}}
	if len(o.Keys) > 0 {
		r.keys = map[string]bool{}
		for _, k := range o.Keys {
			if k == "" {
				return nil, errors.New("logread: an empty partition key matches nothing")
			}
			r.keys[k] = true
			r.hashes = append(r.hashes, shardmap.HashKey(k))
		}
	}
	for _, k := range o.KeyShards {
		r.hashes = append(r.hashes, shardmap.HashKey(k))
	}
	return r, nil
}

// Stats returns a snapshot of the progress.
func (r *Reader) Stats() Stats {
	s := Stats{UserRecords: r.userRecs.Load(), KinesisRecords: r.kinRecs.Load(), Throttled: r.throttled.Load(),
		IteratorsRenewed: r.renewed.Load(), Warned: r.warned.Load()}
	r.statMu.Lock()
	s.ShardsDone, s.ShardsTotal = r.done, r.total
	for _, ms := range r.behind {
		s.Behind = max(s.Behind, time.Duration(ms)*time.Millisecond)
	}
	r.statMu.Unlock()
	return s
}

func (r *Reader) warn(format string, args ...any) {
	r.warned.Add(1)
	r.emitMu.Lock()
	defer r.emitMu.Unlock()
	r.o.Warn(fmt.Sprintf(format, args...))
}

// node is one shard of the stream's lineage.
type node struct {
	s       types.Shard
	state   int // waiting, running, finished
	initial bool
}

const (
	waiting = iota
	running
	finished
)

type shardResult struct {
	id     string
	closed bool
	err    error
}

// Run reads until every selected shard is done (or, with Follow, until ctx ends: Run then
// returns nil) and calls emit for every user record, in order within a shard and with every
// parent's records before its children's. emit is never called concurrently; an error from it
// stops reading and is returned.
func (r *Reader) Run(ctx context.Context, emit func(*Record) error) error {
	r.emit = emit
	r.started = r.o.Now()
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	listed, err := r.list(ctx)
	if err != nil {
		return err
	}
	nodes := map[string]*node{}
	var order []string // listing order, which is creation order
	for _, s := range listed {
		id := aws.ToString(s.ShardId)
		nodes[id] = &node{s: s, initial: true}
		order = append(order, id)
	}
	for _, id := range r.o.Shards {
		if nodes[id] == nil {
			return fmt.Errorf("stream %s has no shard %s (it may be past the retention period)", r.o.Stream, id)
		}
	}
	for _, id := range order {
		n := nodes[id]
		switch {
		case !r.selected(n):
			n.state = finished // counts as read for its children
		case r.o.From.Type == types.ShardIteratorTypeLatest && closed(n.s):
			n.state = finished // nothing will ever be written to it again
		default:
			r.total++
		}
	}

	results := make(chan shardResult)
	inFlight := 0
	// awaitingChildren holds closed shards whose children the listing does not show yet.
	awaitingChildren := map[string]bool{}
	var tick <-chan time.Time
	if r.o.Follow {
		t := time.NewTicker(r.o.PollInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		for _, id := range order {
			n := nodes[id]
			if n.state != waiting || !r.parentsDone(n, nodes) {
				continue
			}
			n.state = running
			inFlight++
			pos := TrimHorizon
			if n.initial {
				pos = r.o.From
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				closed, err := r.readShard(ctx, id, pos)
				select {
				case results <- shardResult{id, closed, err}:
				case <-ctx.Done():
				}
			}()
		}
		// Without Follow, waiting shards always have a running (or finished) parent. With it,
		// a closed shard's children may not be listed yet: they are looked for on every tick.
		if inFlight == 0 && len(awaitingChildren) == 0 && !anyWaiting(nodes) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case res := <-results:
			inFlight--
			if res.err != nil {
				if ctx.Err() != nil && errors.Is(res.err, context.Canceled) {
					return nil
				}
				return res.err
			}
			nodes[res.id].state = finished
			r.statMu.Lock()
			r.done++
			delete(r.behind, res.id)
			r.statMu.Unlock()
			if r.o.Follow && res.closed && len(r.o.Shards) == 0 && !hasChild(res.id, nodes) {
				awaitingChildren[res.id] = true
			}
		case <-tick:
			if len(awaitingChildren) == 0 {
				continue
			}
			listed, err := r.list(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			for _, s := range listed {
				id := aws.ToString(s.ShardId)
				if nodes[id] != nil {
					nodes[id].s = s
					continue
				}
				n := &node{s: s}
				nodes[id] = n
				order = append(order, id)
				if r.selected(n) {
					r.statMu.Lock()
					r.total++
					r.statMu.Unlock()
				} else {
					n.state = finished
				}
			}
			for id := range awaitingChildren {
				if hasChild(id, nodes) {
					delete(awaitingChildren, id)
				}
			}
		}
	}
}

func anyWaiting(nodes map[string]*node) bool {
	for _, n := range nodes {
		if n.state == waiting {
			return true
		}
	}
	return false
}

func closed(s types.Shard) bool {
	return s.SequenceNumberRange != nil && s.SequenceNumberRange.EndingSequenceNumber != nil
}

func hasChild(id string, nodes map[string]*node) bool {
	for _, n := range nodes {
		if aws.ToString(n.s.ParentShardId) == id || aws.ToString(n.s.AdjacentParentShardId) == id {
			return true
		}
	}
	return false
}

// parentsDone reports whether every parent of n that is known has been read (or is not
// selected). A parent past the retention period is no longer listed and holds nothing to read.
func (r *Reader) parentsDone(n *node, nodes map[string]*node) bool {
	for _, p := range []string{aws.ToString(n.s.ParentShardId), aws.ToString(n.s.AdjacentParentShardId)} {
		if pn := nodes[p]; p != "" && pn != nil && pn.state != finished {
			return false
		}
	}
	return true
}

func (r *Reader) selected(n *node) bool {
	id := aws.ToString(n.s.ShardId)
	if len(r.o.Shards) > 0 && !slices.Contains(r.o.Shards, id) {
		return false
	}
	if len(r.hashes) == 0 {
		return true
	}
	start, err1 := shardmap.ParseHash(aws.ToString(n.s.HashKeyRange.StartingHashKey))
	end, err2 := shardmap.ParseHash(aws.ToString(n.s.HashKeyRange.EndingHashKey))
	if err1 != nil || err2 != nil {
		return true // read it rather than risk missing a key
	}
	for _, h := range r.hashes {
		if h.Compare(start) >= 0 && h.Compare(end) <= 0 {
			return true
		}
	}
	return false
}

func (r *Reader) list(ctx context.Context) ([]types.Shard, error) {
	var out []types.Shard
	err := r.retry(ctx, "ListShards", func() error {
		var err error
		out, err = shardmap.ListAll(ctx, r.kc, r.o.Stream)
		return err
	})
	if err != nil {
		var nf *types.ResourceNotFoundException
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("%w: %s (%s)", ErrStreamNotFound, r.o.Stream, nf.ErrorMessage())
		}
		return nil, fmt.Errorf("list the shards of %s: %w", r.o.Stream, err)
	}
	return out, nil
}

// throttledError reports errors that a later retry of the same call can fix: read limits.
func throttledError(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.ErrorCode() {
	case "ProvisionedThroughputExceededException", "LimitExceededException", "ThrottlingException",
		"KMSThrottlingException":
		return true
	}
	return false
}

func expiredError(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "ExpiredIteratorException"
}

func newBackOff() *backoff.ExponentialBackOff {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 250 * time.Millisecond
	bo.MaxInterval = 10 * time.Second
	return bo
}

// retry calls f until it succeeds, fails with something other than throttling, or ctx ends.
func (r *Reader) retry(ctx context.Context, what string, f func() error) error {
	var bo *backoff.ExponentialBackOff
	for {
		err := f()
		if err == nil || !throttledError(err) {
			return err
		}
		if bo == nil {
			bo = newBackOff()
		}
		r.throttled.Add(1)
		if err := sleep(ctx, bo.NextBackOff()); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// shardReader is the state of one shard being read.
type shardReader struct {
	r       *Reader
	id      string
	start   Position
	lastSeq string    // the last Kinesis record handed out
	latest  time.Time // when a LATEST iterator was taken (to renew it without a gap)
	x       Expander
	// skipBefore drops records that arrived before it (an AT_TIMESTAMP read done by hand).
	skipBefore time.Time
}

// iterator returns a shard iterator just after the last record read, or at the start position.
func (sr *shardReader) iterator(ctx context.Context) (*string, error) {
	in := &kinesis.GetShardIteratorInput{ShardId: aws.String(sr.id)}
	if strings.HasPrefix(sr.r.o.Stream, "arn:") {
		in.StreamARN = aws.String(sr.r.o.Stream)
	} else {
		in.StreamName = aws.String(sr.r.o.Stream)
	}
	switch {
	case sr.lastSeq != "":
		in.ShardIteratorType, in.StartingSequenceNumber = types.ShardIteratorTypeAfterSequenceNumber, aws.String(sr.lastSeq)
	case sr.start.Type == types.ShardIteratorTypeLatest && !sr.latest.IsZero():
		// Renewing a LATEST iterator before anything was read: LATEST again would skip what
		// arrived in between.
		in.ShardIteratorType, in.Timestamp = types.ShardIteratorTypeAtTimestamp, aws.Time(sr.latest)
	default:
		in.ShardIteratorType = sr.start.Type
		if sr.start.Type == types.ShardIteratorTypeAtTimestamp {
			in.Timestamp = aws.Time(sr.start.At)
		}
	}
	if in.ShardIteratorType == types.ShardIteratorTypeLatest {
		sr.latest = sr.r.o.Now()
	}
	var out *kinesis.GetShardIteratorOutput
	err := sr.r.retry(ctx, "GetShardIterator", func() error {
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if in.ShardIteratorType == types.ShardIteratorTypeAtTimestamp {
			cctx, cancel = context.WithTimeout(ctx, sr.r.o.AtTimestampTimeout)
		}
		defer cancel()
		var err error
		out, err = sr.r.kc.GetShardIterator(cctx, in)
		return err
	})
	if err != nil && in.ShardIteratorType == types.ShardIteratorTypeAtTimestamp && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		// Some endpoints (kinesalite) never answer AT_TIMESTAMP for a shard with no record at or
		// after the time. Reading from the trim horizon and skipping the older records gives
		// the same records, only slower.
		sr.r.warn("shard %s: no answer to an AT_TIMESTAMP iterator request within %s; reading from the trim horizon instead, skipping records that arrived before %s",
			sr.id, sr.r.o.AtTimestampTimeout, aws.ToTime(in.Timestamp).UTC().Format(time.RFC3339Nano))
		sr.skipBefore = aws.ToTime(in.Timestamp)
		in.ShardIteratorType, in.Timestamp = types.ShardIteratorTypeTrimHorizon, nil
		err = sr.r.retry(ctx, "GetShardIterator", func() error {
			var err error
			out, err = sr.r.kc.GetShardIterator(ctx, in)
			return err
		})
	}
	if err != nil {
		return nil, fmt.Errorf("shard %s: get an iterator: %w", sr.id, err)
	}
	return out.ShardIterator, nil
}

// readShard reads one shard until it is done; closed reports that the shard has ended for good.
func (r *Reader) readShard(ctx context.Context, id string, pos Position) (closed bool, err error) {
	sr := &shardReader{r: r, id: id, start: pos}
	it, err := sr.iterator(ctx)
	if err != nil {
		return false, err
	}
	var bo *backoff.ExponentialBackOff
	var last time.Time
	for {
		if err := sleep(ctx, r.o.MinInterval-time.Since(last)); err != nil {
			return false, err
		}
		last = time.Now()
		out, err := r.kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: it, Limit: aws.Int32(r.o.Limit)})
		switch {
		case err == nil:
			bo = nil
		case expiredError(err):
			r.renewed.Add(1)
			r.warn("shard %s: iterator expired; renewed after sequence number %q", id, sr.lastSeq)
			if it, err = sr.iterator(ctx); err != nil {
				return false, err
			}
			continue
		case throttledError(err):
			if bo == nil {
				bo = newBackOff()
			}
			r.throttled.Add(1)
			if err := sleep(ctx, bo.NextBackOff()); err != nil {
				return false, err
			}
			continue
		default:
			return false, fmt.Errorf("shard %s: GetRecords: %w", id, err)
		}
		behind := aws.ToInt64(out.MillisBehindLatest)
		r.statMu.Lock()
		r.behind[id] = behind
		r.statMu.Unlock()
		past, err := sr.emitPage(out.Records)
		if err != nil || past {
			return false, err
		}
		it = out.NextShardIterator
		if it == nil {
			return true, nil
		}
		caughtUp := behind == 0
		if !r.o.Follow && caughtUp && (len(out.Records) == 0 || r.o.To.IsZero() && arrivedAfterStart(out.Records, sr)) {
			return false, nil
		}
		if r.o.Follow && caughtUp && len(out.Records) == 0 && !r.o.To.IsZero() && r.o.Now().After(r.o.To) {
			return false, nil
		}
		if len(out.Records) == 0 {
			if err := sleep(ctx, r.o.PollInterval-r.o.MinInterval); err != nil {
				return false, err
			}
		}
	}
}

// arrivedAfterStart: a caught-up page whose last record arrived after this shard's reading
// started holds the tip as of the start; without it a shard written to without pause would
// never look finished.
func arrivedAfterStart(recs []types.Record, sr *shardReader) bool {
	lastRec := recs[len(recs)-1]
	return lastRec.ApproximateArrivalTimestamp != nil && lastRec.ApproximateArrivalTimestamp.After(sr.r.started)
}

// emitPage hands out a page's user records; past reports a record after To (the shard is done).
func (sr *shardReader) emitPage(recs []types.Record) (past bool, err error) {
	if len(recs) == 0 {
		return false, nil
	}
	r := sr.r
	r.emitMu.Lock()
	defer r.emitMu.Unlock()
	for i := range recs {
		kr := &recs[i]
		seq := aws.ToString(kr.SequenceNumber)
		if sr.lastSeq != "" && !SeqLess(sr.lastSeq, seq) {
			continue // already handed out (a renewed iterator cannot do this, but never print twice)
		}
		if !sr.skipBefore.IsZero() && aws.ToTime(kr.ApproximateArrivalTimestamp).Before(sr.skipBefore) {
			sr.lastSeq = seq
			continue
		}
		if !r.o.To.IsZero() && aws.ToTime(kr.ApproximateArrivalTimestamp).After(r.o.To) {
			if r.o.Flush != nil {
				return true, r.o.Flush()
			}
			return true, nil
		}
		n, ierr, err := sr.x.Expand(sr.id, kr, r.keys, func(rec *Record) error {
			r.userRecs.Add(1)
			return r.emit(rec)
		})
		if err != nil {
			return false, err
		}
		if ierr != nil {
			r.warned.Add(1)
			r.o.Warn(fmt.Sprintf("shard %s sequence number %s: aggregate only partly expanded (%d user records before the fault): %v",
				sr.id, seq, n, ierr))
		}
		r.kinRecs.Add(1)
		sr.lastSeq = seq
	}
	if r.o.Flush != nil {
		return false, r.o.Flush()
	}
	return false, nil
}

// SeqLess compares two Kinesis sequence numbers (decimal strings of up to 128 bits).
func SeqLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// Expander turns Kinesis records into user records, reusing its buffers. It is not safe for
// concurrent use.
type Expander struct {
	d   kpl.Deaggregator
	urs []kpl.UserRecord
	rec Record
}

// Expand calls fn for each user record of kr (only those whose partition key is in keys, when
// keys is not nil) and returns how many user records kr holds. indexErr is set for an aggregate
// that could only be expanded up to a bad key index (the records before it were handed out);
// err is fn's error, which stops the expansion.
func (x *Expander) Expand(shardID string, kr *types.Record, keys map[string]bool, fn func(*Record) error) (n int, indexErr, err error) {
	var agg bool
	x.urs, agg, indexErr = x.d.Deaggregate(x.urs[:0], kr.Data)
	defer clear(x.urs) // do not keep the page alive
	rec := &x.rec
	*rec = Record{ShardID: shardID, SequenceNumber: aws.ToString(kr.SequenceNumber), Aggregated: agg,
		Arrival: aws.ToTime(kr.ApproximateArrivalTimestamp)}
	for j := range x.urs {
		u := &x.urs[j]
		rec.SubSequence, rec.PartitionKey, rec.ExplicitHashKey, rec.Data = u.SubSequence, u.PartitionKey, u.ExplicitHashKey, u.Data
		if !agg {
			rec.PartitionKey = []byte(aws.ToString(kr.PartitionKey))
		}
		if keys != nil && !keys[string(rec.PartitionKey)] {
			continue
		}
		if err := fn(rec); err != nil {
			return len(x.urs), indexErr, err
		}
	}
	return len(x.urs), indexErr, nil
}
