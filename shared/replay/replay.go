// Package replay publishes records read back from a Kinesis stream to an NSQ topic, in stream
// order per shard (and parents before children): to warm a cache service that consumes NSQ, feed
// a new consumer, or re-run history through a fixed service.
package replay

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/nsqio/go-nsq"
	"golang.org/x/time/rate"

	"github.com/nsqk/nsqk/shared/logread"
)

// Options says where to publish.
type Options struct {
	NSQDTCPAddress string
	Topic          string
	// Rate limits messages per second (0 = unlimited).
	Rate float64
	// BatchCount and BatchBytes bound one MPUB (defaults 100 messages, 1 MiB; nsqd's
	// --max-body-size is 5 MiB).
	BatchCount, BatchBytes int
	// Warn receives warnings (go-nsq's included).
	Warn func(string)
}

// ShardSummary is what was replayed from one shard.
type ShardSummary struct {
	Records                   int
	FirstArrival, LastArrival time.Time
}

// Summary is what a replay published.
type Summary struct {
	Published int64
	Shards    map[string]*ShardSummary
}

// ShardIDs returns the shards replayed, sorted.
func (s *Summary) ShardIDs() []string {
	var ids []string
	for id := range s.Shards {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Replayer publishes records; Add is called with each user record in stream order.
type Replayer struct {
	o       Options
	p       *nsq.Producer
	lim     *rate.Limiter
	batch   [][]byte
	size    int
	pending []*ShardSummary // the summaries of the batched records, counted once published
	pendAt  []time.Time
	sum     Summary
	n       atomic.Int64
}

// New connects a producer to nsqd.
func New(o Options) (*Replayer, error) {
	if o.NSQDTCPAddress == "" || o.Topic == "" {
		return nil, errors.New("replay: an nsqd TCP address and a topic are required")
	}
	if !nsq.IsValidTopicName(o.Topic) {
		return nil, fmt.Errorf("replay: %q is not a valid NSQ topic name", o.Topic)
	}
	if o.BatchCount <= 0 {
		o.BatchCount = 100
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 1 << 20
	}
	if o.Warn == nil {
		o.Warn = func(string) {}
	}
	p, err := nsq.NewProducer(o.NSQDTCPAddress, nsq.NewConfig())
	if err != nil {
		return nil, err
	}
	p.SetLogger(warnLogger(o.Warn), nsq.LogLevelWarning)
	if err := p.Ping(); err != nil {
		p.Stop()
		return nil, fmt.Errorf("replay: nsqd %s: %w", o.NSQDTCPAddress, err)
	}
	r := &Replayer{o: o, p: p, sum: Summary{Shards: map[string]*ShardSummary{}}}
	if o.Rate > 0 {
		burst := min(o.BatchCount, max(1, int(o.Rate)))
		r.o.BatchCount = burst
		r.lim = rate.NewLimiter(rate.Limit(o.Rate), burst)
	}
	return r, nil
}

// Published returns how many messages nsqd has accepted so far (safe to call concurrently).
func (r *Replayer) Published() int64 { return r.n.Load() }

// Add queues one record's data; the batch is published when full.
func (r *Replayer) Add(ctx context.Context, rec *logread.Record) error {
	if len(r.batch) > 0 && (len(r.batch) >= r.o.BatchCount || r.size+len(rec.Data) > r.o.BatchBytes) {
		if err := r.Flush(ctx); err != nil {
			return err
		}
	}
	s := r.sum.Shards[rec.ShardID]
	if s == nil {
		s = &ShardSummary{}
		r.sum.Shards[rec.ShardID] = s
	}
	r.batch = append(r.batch, append([]byte(nil), rec.Data...))
	r.size += len(rec.Data)
	r.pending = append(r.pending, s)
	r.pendAt = append(r.pendAt, rec.Arrival)
	return nil
}

// Flush publishes the batch (waiting for the rate limit) and returns once nsqd accepted it.
func (r *Replayer) Flush(ctx context.Context) error {
	if len(r.batch) == 0 {
		return nil
	}
	if r.lim != nil {
		if err := r.lim.WaitN(ctx, len(r.batch)); err != nil {
			return err
		}
	}
	if err := r.p.MultiPublish(r.o.Topic, r.batch); err != nil {
		return fmt.Errorf("replay: publish to %s: %w", r.o.Topic, err)
	}
	for i, s := range r.pending {
		at := r.pendAt[i]
		if s.Records == 0 || at.Before(s.FirstArrival) {
			s.FirstArrival = at
		}
		if at.After(s.LastArrival) {
			s.LastArrival = at
		}
		s.Records++
	}
	r.n.Add(int64(len(r.batch)))
	r.sum.Published += int64(len(r.batch))
	clear(r.batch)
	r.batch, r.size, r.pending, r.pendAt = r.batch[:0], 0, r.pending[:0], r.pendAt[:0]
	return nil
}

// Close publishes what is left and disconnects; it returns the summary.
func (r *Replayer) Close(ctx context.Context) (*Summary, error) {
	err := r.Flush(ctx)
	r.p.Stop()
	return &r.sum, err
}

type warnLogger func(string)

func (w warnLogger) Output(_ int, s string) error {
	w(s)
	return nil
}
