// Package bridge moves messages from an NSQ topic/channel into a Kinesis data stream.
//
// Each message's partition key (a JSON field) decides its shard; messages are packed into one KPL
// aggregate per lane (shard, key bucket), written with PutRecords, and FINished in NSQ only after
// Kinesis accepted the record that carries them. In strict ordering mode a lane has at most one
// entry in flight and a failed entry is retried before anything newer of that lane, so records of
// one key reach their shard in the order the bridge received them, through any number of retries.
// Bad input never blocks the stream: it is published to a dead-letter topic with the reason.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/nsqio/go-nsq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nsqk/nsqk/shared/shardmap"
)

// stickyKey is where a key misplaced by a reshard keeps going, and when it was last routed there.
type stickyKey struct {
	shard string
	last  time.Time
}

// Kinesis is the part of the Kinesis API the bridge uses (*kinesis.Client implements it).
type Kinesis interface {
	PutRecords(context.Context, *kinesis.PutRecordsInput, ...func(*kinesis.Options)) (*kinesis.PutRecordsOutput, error)
	ListShards(context.Context, *kinesis.ListShardsInput, ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
	DescribeStreamSummary(context.Context, *kinesis.DescribeStreamSummaryInput, ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error)
}

// ErrShutdownTimeout is returned by Run when messages were still unacknowledged when the shutdown
// timeout expired; they were requeued in NSQ (at-least-once: some may also have reached Kinesis).
var ErrShutdownTimeout = errors.New("bridge: shutdown timeout: unacknowledged messages were requeued")

// Bridge is one running NSQ -> Kinesis bridge. Create it with New, run it with Run.
type Bridge struct {
	o       Options
	kc      Kinesis
	log     *slog.Logger
	m       *metrics
	keys    *keyExtractor
	nsqCfg  *nsq.Config
	dl      *deadLetterer
	maxSize int // Kinesis record limit (data + partition key)

	mu      sync.Mutex
	smap    *shardmap.Map
	table   [][]*lane // [shard index in smap][bucket]
	lanes   []*lane   // every lane, in a stable order for round-robin sending
	rr      int
	pending *shardmap.Map // a new shard map waiting for its retired lanes to drain
	stale   bool          // a record landed on a shard the map did not predict: a newer map is being fetched
	stop    bool          // shutting down: seal everything now
	gone    bool          // shutdown timed out: everything held was requeued
	fatal   error
	fence   *ageMap[uint64, int64]  // newest NSQ timestamp accepted per key (64 bits of its MD5), for LateWindow
	written *ageMap[uint64, uint32] // message id -> nsqd of the messages written (their FIN may be lost), for WrittenWindow
	addrs   map[string]uint32       // nsqd addresses, numbered for written
	sticky  map[uint64]stickyKey    // keys a reshard misplaced, held to the shard their record went to

	held      atomic.Int64 // messages received and not yet FINished or requeued
	lastIn    atomic.Int64 // when the last message arrived (Unix ns)
	threshold int64        // held messages at which aggregates are sealed early (NSQ RDY starvation)
	kick      chan struct{}
	slots     chan struct{}
	refresh   chan struct{}
	fatalCh   chan struct{}
	fatalOnce sync.Once
	failures  failureLog
	ready     atomic.Bool
	reqs      sync.WaitGroup

	// Stall watch (stall.go).
	consumer     atomic.Pointer[nsq.Consumer]
	started      atomic.Int64 // when Run began (Unix ns)
	noConnSince  atomic.Int64 // since when no nsqd connection is open (Unix ns); 0 while connected
	otherClients atomic.Int64 // other clients on the channel at the last stats poll
	topicNowhere atomic.Bool  // nsqlookupd named no nsqd for the topic at the last poll
	clientID     string       // this bridge's client_id in nsqd's stats
}

// New validates the options and returns a bridge that has not connected to anything yet.
// reg may be nil (no metrics registered).
func New(o Options, kc Kinesis, log *slog.Logger, reg prometheus.Registerer) (*Bridge, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := nsqConfig(&o)
	if err != nil {
		return nil, err
	}
	b := &Bridge{
		o: o, kc: kc, log: log, m: newMetrics(reg, newCloudWatch(&o)), keys: newKeyExtractor(&o), nsqCfg: cfg,
		kick: make(chan struct{}, 1), slots: make(chan struct{}, o.MaxRequestsInFlight),
		refresh: make(chan struct{}, 1), fatalCh: make(chan struct{}),
		threshold: max(1, int64(o.MaxInFlight)*3/4),
		sticky:    map[uint64]stickyKey{},
		addrs:     map[string]uint32{},
	}
	b.clientID = cfg.ClientID
	// A key collision in the fence (64 bits of MD5) needs ~2^32 keys to become likely.
	b.fence = newAgeMap[uint64, int64](o.LateWindow, budgetSlots(o.LateWindowMemoryMiB), func(n int) { b.m.evictedEarly(memLateWindow, n) })
	b.written = newAgeMap[uint64, uint32](o.WrittenWindow, budgetSlots(o.WrittenMemoryMiB), func(n int) { b.m.evictedEarly(memWritten, n) })
	b.dl = newDeadLetterer(&b.o, cfg, log, b.m, b.release)
	return b, nil
}

// nsqConfig builds the go-nsq configuration: auto-response off (we FIN only what is durable),
// go-nsq's max-attempts path off (it would FIN and drop; we dead-letter instead), a small output
// buffer timeout so that nsqd does not hold messages back for 250 ms at low rates, and quick
// reconnects after an nsqd restart. --consumer-opt overrides any of these.
func nsqConfig(o *Options) (*nsq.Config, error) {
	cfg := nsq.NewConfig()
	cfg.MaxInFlight = o.MaxInFlight
	cfg.MsgTimeout = o.MsgTimeout
	cfg.MaxAttempts = 0
	cfg.OutputBufferTimeout = 25 * time.Millisecond
	cfg.UserAgent = "nsqk-bridge"
	cfg.ClientID = uniqueClientID()
	// go-nsq reconnects to a directly addressed nsqd every lookupd_poll_interval, and through
	// nsqlookupd it finds a restarted nsqd only at its next poll (one when the connection drops,
	// while nsqd is usually still down, then every interval): with go-nsq's 60 s default an nsqd
	// restart stalls the bridge for up to a minute either way.
	cfg.LookupdPollInterval = 5 * time.Second
	if o.AuthSecret != "" {
		cfg.AuthSecret = o.AuthSecret
	}
	if o.TLS {
		cfg.TlsV1 = true
		tc, err := tlsConfig(o)
		if err != nil {
			return nil, err
		}
		cfg.TlsConfig = tc
	}
	for _, kv := range o.ConsumerOpts {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("--consumer-opt %q: want name=value", kv)
		}
		if err := cfg.Set(k, v); err != nil {
			return nil, fmt.Errorf("--consumer-opt %q: %w", kv, err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("nsq config: %w", err)
	}
	return cfg, nil
}

// Ready reports whether the bridge is connected to NSQ, knows the shard map and is not stopping.
func (b *Bridge) Ready() bool { return b.ready.Load() }

// Held returns the number of NSQ messages received and not yet FINished or requeued.
func (b *Bridge) Held() int64 { return b.held.Load() }

// Run starts the bridge and blocks until ctx is cancelled (then shuts down gracefully: stop taking
// messages, flush, wait for Kinesis, FIN, within ShutdownTimeout) or a fatal error occurs (the
// stream was deleted, for example: everything not yet written is requeued). It returns nil after
// a clean shutdown.
func (b *Bridge) Run(ctx context.Context) error {
	now := time.Now().UnixNano()
	b.started.Store(now)
	b.noConnSince.Store(now)
	if err := b.start(ctx); err != nil {
		return err
	}
	shards := b.smap.Len() // read before the refresher can swap the map
	// Background work outlives ctx: in-flight PutRecords must finish during the shutdown.
	bg, cancelBG := context.WithCancel(context.WithoutCancel(ctx))
	var loops sync.WaitGroup
	for _, f := range []func(context.Context){b.sendLoop, b.flushLoop, b.touchLoop, b.refreshLoop, b.backlogLoop, b.emfLoop, b.housekeepingLoop, b.stallLoop} {
		loops.Add(1)
		go func() { defer loops.Done(); f(bg) }()
	}

	stopDiscovery := func() {}
	consumer, err := nsq.NewConsumer(b.o.Topic, b.o.Channel, b.nsqCfg)
	if err == nil {
		b.watchConsumer(consumer)
		consumer.SetLogger(nsqLogger{b.log}, nsq.LogLevelWarning)
		consumer.AddHandler(b)
		if b.o.NSQDPartition.Count > 0 {
			stopDiscovery = b.discover(ctx, consumer)
		} else if len(b.o.LookupdHTTPAddresses) > 0 {
			err = consumer.ConnectToNSQLookupds(b.o.LookupdHTTPAddresses)
		} else {
			err = consumer.ConnectToNSQDs(b.o.NSQDTCPAddresses)
		}
	}
	if err != nil {
		cancelBG()
		loops.Wait()
		b.dl.close()
		return fmt.Errorf("bridge: connect to NSQ: %w", err)
	}
	b.ready.Store(true)
	b.sampleStall(time.Now()) // connected now: the stall watch need not wait for its next tick
	b.log.Info("bridge running", "topic", b.o.Topic, "channel", b.o.Channel, "stream", b.o.Stream,
		"shards", shards, "key_buckets", b.o.KeyBuckets, "ordering", b.o.Ordering,
		"late_redelivery", b.o.LateRedelivery, "max_buffered_time", b.o.MaxBufferedTime, "max_in_flight", b.o.MaxInFlight, "max_record_size", b.maxSize)

	select {
	case <-ctx.Done():
		b.log.Info("shutting down: no new messages, flushing", "held", b.held.Load())
	case <-b.fatalCh:
		b.log.Error("fatal error: shutting down, requeueing everything not written", "err", b.fatalErr())
	}
	b.ready.Store(false)
	stopDiscovery()
	err = b.shutdown(consumer)
	cancelBG()
	loops.Wait()
	b.dl.close()
	if ferr := b.fatalErr(); ferr != nil {
		return ferr
	}
	return err
}

// start reads the stream's record size limit and its shard map, retrying until ctx ends; a
// stream that does not exist is an immediate error.
func (b *Bridge) start(ctx context.Context) error {
	b.maxSize = b.o.maxRecordSize()
	for attempt := 0; ; attempt++ {
		err := b.describe(ctx)
		if err == nil {
			var m *shardmap.Map
			if m, err = shardmap.Load(ctx, b.kc, b.o.Stream); err == nil {
				b.install(m, time.Time{})
				return nil
			}
		}
		if isFatal(err) {
			return fmt.Errorf("bridge: stream %s: %w", b.o.Stream, err)
		}
		b.log.Warn("cannot read the stream yet; retrying", "stream", b.o.Stream, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("bridge: stream %s not ready: %w", b.o.Stream, err)
		case <-time.After(min(time.Second<<min(attempt, 4), 15*time.Second)):
		}
	}
}

func (b *Bridge) describe(ctx context.Context) error {
	in := &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(b.o.Stream)}
	if b.o.streamIsARN() {
		in = &kinesis.DescribeStreamSummaryInput{StreamARN: aws.String(b.o.Stream)}
	}
	out, err := b.kc.DescribeStreamSummary(ctx, in)
	if err != nil {
		return err
	}
	if b.o.MaxRecordSize == 0 && out.StreamDescriptionSummary != nil && out.StreamDescriptionSummary.MaxRecordSizeInKiB != nil {
		if kib := int(*out.StreamDescriptionSummary.MaxRecordSizeInKiB); kib > 0 {
			// A lane that cannot send keeps aggregating; its records must still fit a request.
			b.maxSize = min(kib<<10, maxRequestBytes)
		}
	}
	return nil
}

func (b *Bridge) setFatal(err error) {
	b.fatalOnce.Do(func() {
		b.mu.Lock()
		b.fatal = err
		b.mu.Unlock()
		close(b.fatalCh)
	})
}

func (b *Bridge) fatalErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fatal
}

// release FINishes (fin) or requeues one held message and accounts for it.
func (b *Bridge) release(m *nsq.Message, fin bool, cause string, delay time.Duration) {
	if fin {
		m.Finish()
	} else {
		m.RequeueWithoutBackoff(delay)
		b.m.messagesRequeue.WithLabelValues(cause).Inc()
	}
	b.m.inFlight.Set(float64(b.held.Add(-1)))
}

func (b *Bridge) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// shutdown stops intake, flushes every lane and waits for all held messages to be FINished (or
// requeued after a fatal error) and for the NSQ connections to close, at most ShutdownTimeout.
func (b *Bridge) shutdown(consumer *nsq.Consumer) error {
	// RDY 0 first, and a moment for the messages already on the wire: nsqd can send a message
	// right after it answers CLS with CLOSE_WAIT, and go-nsq drops anything after CLOSE_WAIT, so
	// that message would come back only after its timeout, behind newer ones (a late redelivery).
	consumer.ChangeMaxInFlight(0)
	b.quiesce(100*time.Millisecond, time.Second)
	consumer.Stop() // CLS: connections close once nothing is in flight on them
	b.mu.Lock()
	b.stop = true
	b.sealDue(time.Now())
	b.mu.Unlock()
	b.signal(b.kick)

	deadline := time.NewTimer(b.o.ShutdownTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	// Done when nsqd will send nothing more (every connection closed, which go-nsq does only once
	// nothing is in flight on it) and everything received is written or dead-lettered. Stopping at
	// held == 0 alone would leave messages that were on the wire when CLS was sent unanswered, to
	// come back after the message timeout as late redeliveries.
	for {
		if b.fatalErr() != nil {
			b.abandon("fatal")
		}
		if closed(consumer.StopChan) && b.held.Load() == 0 {
			break
		}
		select {
		case <-deadline.C:
			n := b.abandon("shutdown_timeout")
			b.log.Error("shutdown timeout: requeued unacknowledged messages", "requeued", n, "timeout", b.o.ShutdownTimeout)
			b.waitStopped(consumer)
			return ErrShutdownTimeout
		case <-tick.C:
		}
	}
	b.log.Info("shutdown complete: every message received was written to Kinesis or dead-lettered")
	return nil
}

// quiesce waits until no message has arrived for quiet, at most max.
func (b *Bridge) quiesce(quiet, max time.Duration) {
	deadline := time.Now().Add(max)
	t := time.NewTicker(quiet / 4)
	defer t.Stop()
	for now := range t.C {
		if now.Sub(time.Unix(0, b.lastIn.Load())) >= quiet || now.After(deadline) {
			return
		}
	}
}

func closed(ch chan int) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (b *Bridge) waitStopped(consumer *nsq.Consumer) {
	select {
	case <-consumer.StopChan:
	case <-time.After(5 * time.Second):
		b.log.Warn("NSQ connections did not close in time")
	}
}

// abandon requeues every message held in lanes (their records are not known to be written) and
// stops FINishing: a late success for one of them is ignored (at-least-once). Messages whose
// dead-letter publish is pending are left to it. It returns how many were requeued.
func (b *Bridge) abandon(cause string) int {
	b.mu.Lock()
	b.gone = true
	var msgs []*nsq.Message
	for _, l := range b.lanes {
		for _, r := range l.held() {
			msgs = r.s.deliveries(msgs)
		}
		l.queue, l.open, l.openB = nil, nil, 0
		l.agg.Reset()
	}
	b.mu.Unlock()
	for _, m := range msgs {
		b.release(m, false, cause, 0)
	}
	b.m.buffered.Set(0)
	return len(msgs) // deliveries: a message delivered twice is requeued twice (nsqd takes one)
}
