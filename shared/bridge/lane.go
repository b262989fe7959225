package bridge

import (
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nsqio/go-nsq"
	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/shardmap"
)

// msgRef is one held NSQ message with the routing facts needed to re-route it after a reshard.
type msgRef struct {
	s    *slot
	key  string
	hash shardmap.Hash
}

// slot is one message the bridge holds (b.mu guards it). When nsqd delivers a message the bridge
// still holds (it timed out, or its connection dropped), the new delivery joins the slot: the
// message is written once, and every delivery is answered (FIN after the write, REQ when given up),
// because go-nsq counts each as in flight until it is, and nsqd acts on the one it currently has
// out (same id).
type slot struct {
	m    *nsq.Message   // the first delivery
	more []*nsq.Message // later deliveries while held (rare)
}

func (s *slot) newest() *nsq.Message {
	if n := len(s.more); n > 0 {
		return s.more[n-1]
	}
	return s.m
}

// deliveries appends every delivery of the message to dst.
func (s *slot) deliveries(dst []*nsq.Message) []*nsq.Message {
	return append(append(dst, s.m), s.more...)
}

// entry is one Kinesis record (an aggregate) and the NSQ messages it carries. Its messages are
// FINished when, and only when, Kinesis accepts the record.
type entry struct {
	lane     *lane
	rec      kpl.Record
	msgs     []msgRef
	bytes    int       // user data bytes, for the buffered gauge
	touched  time.Time // when its messages were last received or TOUCHed
	inFlight bool
	attempts int
	// maybeWritten: a request carrying it failed as a whole (timeout, connection lost, 5xx), so it
	// may be in the stream already. It is only ever sent again as the same record.
	maybeWritten bool
}

func (e *entry) size() int { return len(e.rec.Data) + len(e.rec.PartitionKey) }

// lane is the unit of ordering: one per (shard, key bucket). Records of one key always travel in
// the same lane; in strict mode a lane has at most one entry in flight, and a failed entry is
// retried before anything after it is sent.
type lane struct {
	shard   shardmap.Shard
	bucket  int
	pk      string // outer partition key (the bucket's)
	agg     *kpl.Aggregator
	open    []msgRef // messages in agg, in arrival order
	openB   int      // their data bytes
	since   time.Time
	touched time.Time
	queue   []*entry // sealed entries, oldest first
	flying  int      // entries of queue in flight
	bo      *backoff.ExponentialBackOff
	retryAt time.Time
	retired bool // its shard is gone from the pending shard map: drain, then re-route
	paused  bool // a record of this lane landed on another shard: send nothing until the map is refreshed
}

func newLane(s shardmap.Shard, bucket int, o *Options, maxSize int) *lane {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.Multiplier, bo.RandomizationFactor = o.RetryInitial, o.RetryMax, 2, 0.5
	return &lane{
		shard:  s,
		bucket: bucket,
		pk:     bucketKey(bucket),
		// The outer explicit hash key pins the aggregate to this shard; the outer partition key is
		// the bucket's, stable for every key in it, so Lambda's ParallelizationFactor (which
		// assigns batches by outer partition key) keeps each user key on one lane.
		agg: kpl.NewAggregator(kpl.AggregatorConfig{MaxSize: maxSize, OuterPartitionKey: bucketKey(bucket),
			OuterExplicitHashKey: s.StartKey}),
		bo: bo,
	}
}

// bucketKey is the outer partition key of a key bucket.
func bucketKey(bucket int) string { return "b" + strconv.Itoa(bucket) }

// held returns every message the lane holds, oldest first (b.mu held).
func (l *lane) held() []msgRef {
	var out []msgRef
	for _, e := range l.queue {
		out = append(out, e.msgs...)
	}
	return append(out, l.open...)
}
