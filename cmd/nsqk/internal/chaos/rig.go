package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/nsqio/go-nsq"
	"github.com/nsqio/nsq/nsqd"

	"github.com/nsqk/nsqk/shared/bridge"
	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/kinesisfault"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/nsqlocal"
	"github.com/nsqk/nsqk/shared/putrecords"
)

// NSQ is an embedded nsqd that can be restarted on the same addresses and data path.
type NSQ struct {
	mu   sync.Mutex
	d    *nsqlocal.NSQD
	opts nsqlocal.Options
}

func startNSQ(o nsqlocal.Options) (*NSQ, error) {
	d, err := nsqlocal.Start(o)
	if err != nil {
		return nil, err
	}
	o.TCPAddress, o.HTTPAddress = d.TCPAddr, d.HTTPAddr
	return &NSQ{d: d, opts: o}, nil
}

// D returns the running nsqd.
func (n *NSQ) D() *nsqlocal.NSQD {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.d
}

// TCPAddr and HTTPAddr stay the same across restarts.
func (n *NSQ) TCPAddr() string  { return n.opts.TCPAddress }
func (n *NSQ) HTTPAddr() string { return n.opts.HTTPAddress }

// Stop stops nsqd (it persists its queues, in-flight messages included, to the data path).
func (n *NSQ) Stop() { n.D().Stop() }

// Start starts nsqd again on the same addresses and data path.
func (n *NSQ) Start() error {
	d, err := nsqlocal.Start(n.opts)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.d = d
	n.mu.Unlock()
	return nil
}

// Channel returns the stats of topic/channel (ok false if either does not exist).
func (n *NSQ) Channel(topic, channel string) (nsqd.ChannelStats, bool) {
	for _, t := range n.D().GetStats(topic, channel, false).Topics {
		for _, c := range t.Channels {
			return c, true
		}
	}
	return nsqd.ChannelStats{}, false
}

// Pending is every message of topic not yet FINished on channel: the topic's own queue, the
// channel's queue, its in-flight and its deferred messages.
func (n *NSQ) Pending(topic, channel string) int64 {
	var total int64
	for _, t := range n.D().GetStats(topic, channel, false).Topics {
		total += t.Depth
		for _, c := range t.Channels {
			total += c.Depth + int64(c.InFlightCount) + int64(c.DeferredCount)
		}
	}
	return total
}

// Rig is one case's world: an nsqd, a stream on an emulator behind a fault front and a recording
// tap, a ledger of what was published and a reader of the dead-letter topic.
type Rig struct {
	t       *T
	NSQ     *NSQ
	Topic   string
	Channel string
	DLTopic string
	Emu     *kinesislocal.Emulator
	KC      *kinesis.Client // straight to the emulator: administration and reading
	Stream  string
	Tap     *Tap
	Front   *kinesisfault.Front
	Ledger  *Ledger
	DL      *DeadLetters
	Lookupd *nsqlocal.Lookupd // nil unless RigOptions.Lookupd
	// ChildKinesisURL is the Kinesis endpoint of bridge programs started after it is set; empty =
	// the fault front.
	ChildKinesisURL string
}

// RigOptions configures NewRig.
type RigOptions struct {
	Shards int32
	// Emulator: kinesalite (shared by the suite) or kinesis-mock (one per case).
	Emulator kinesislocal.Kind
	// MsgTimeout is nsqd's default message timeout (0 = nsqd's 60 s).
	MsgTimeout time.Duration
	// MemQueueSize of nsqd (0 = nsqd's 10000).
	MemQueueSize int64
	// DiskOnly runs nsqd with --mem-queue-size=0: FIFO delivery however deep the channel gets.
	DiskOnly bool
	// Lookupd registers nsqd with an nsqlookupd and has bridges discover it there.
	Lookupd bool
}

const dlChannel = "chaos"

// NewRig builds a case's world. Everything is torn down when the case ends.
func (t *T) NewRig(ctx context.Context, o RigOptions) (*Rig, error) {
	if o.Shards == 0 {
		o.Shards = 2
	}
	r := &Rig{t: t, Topic: "locations", Channel: "nsqk", DLTopic: "locations_dead", Ledger: NewLedger()}
	r.Stream = "chaos-" + strings.ReplaceAll(filepath.Base(t.Dir), "_", "-")
	nlog := slog.New(slog.NewJSONHandler(t.logf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var err error
	var lookupds []string
	if o.Lookupd {
		if r.Lookupd, err = nsqlocal.StartLookupd(nlog); err != nil {
			return nil, err
		}
		t.Cleanup(r.Lookupd.Stop)
		lookupds = []string{r.Lookupd.TCPAddr}
	}
	r.NSQ, err = startNSQ(nsqlocal.Options{DataPath: mkdir(filepath.Join(t.Dir, "nsqd")), MsgTimeout: o.MsgTimeout,
		MemQueueSize: o.MemQueueSize, DiskOnly: o.DiskOnly, LookupdTCPAddresses: lookupds, Logger: nlog})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		r.NSQ.Stop()
		os.RemoveAll(filepath.Join(t.Dir, "nsqd"))
	})
	// Create the topics and channels up front so that nothing published before a consumer
	// connects is missed.
	r.NSQ.D().GetTopic(r.Topic).GetChannel(r.Channel)
	r.NSQ.D().GetTopic(r.DLTopic).GetChannel(dlChannel)
	if r.Lookupd != nil {
		err := WaitFor(ctx, 30*time.Second, "nsqd registered with nsqlookupd", func() bool {
			return len(r.Lookupd.DB.FindProducers("topic", r.Topic, "")) > 0
		})
		if err != nil {
			return nil, err
		}
	}

	switch o.Emulator {
	case "", kinesislocal.Kinesalite:
		r.Emu, err = t.env.Kinesalite(ctx)
	default:
		r.Emu, err = kinesislocal.Start(ctx, kinesislocal.Options{Kind: o.Emulator})
		if err == nil {
			emu := r.Emu
			t.Cleanup(func() { emu.Close() })
		}
	}
	if err != nil {
		return nil, fmt.Errorf("emulator: %w", err)
	}
	r.KC = r.Emu.Client()
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	// A stream left by an earlier run of the same case (shared kinesalite): start afresh. (Only
	// delete a stream that exists: kinesis-mock stops answering after deleting a missing one.)
	if _, err := r.KC.DescribeStreamSummary(cctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(r.Stream)}); err == nil {
		if _, err := r.KC.DeleteStream(cctx, &kinesis.DeleteStreamInput{StreamName: aws.String(r.Stream)}); err != nil {
			return nil, err
		}
		WaitFor(cctx, 30*time.Second, "old stream deleted", func() bool {
			_, err := r.KC.DescribeStreamSummary(cctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(r.Stream)})
			return err != nil
		})
	}
	if err := kinesislocal.CreateStream(cctx, r.KC, r.Stream, o.Shards); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r.KC.DeleteStream(dctx, &kinesis.DeleteStreamInput{StreamName: aws.String(r.Stream)})
	})
	if r.Tap, err = StartTap(r.Emu.Endpoint); err != nil {
		return nil, err
	}
	t.Cleanup(r.Tap.Close)
	if r.Front, err = kinesisfault.Start(r.Tap.URL); err != nil {
		return nil, err
	}
	t.Cleanup(func() { r.Front.Close() })
	if r.DL, err = collectDeadLetters(r.NSQ.TCPAddr(), r.DLTopic); err != nil {
		return nil, err
	}
	t.Cleanup(r.DL.Stop)
	t.Metric("stream", r.Stream)
	t.Metric("emulator", string(r.Emu.Kind))
	return r, nil
}

func mkdir(d string) string {
	os.MkdirAll(d, 0o755)
	return d
}

// BridgeKinesis returns a Kinesis client for an in-process bridge: through the fault front, with
// the retry settings and the PutRecords encoder of the bridge program (SDK standard retries, no
// client-side retry quota).
func (r *Rig) BridgeKinesis() *kinesis.Client {
	return kinesislocal.NewClient(r.Front.URL, func(o *kinesis.Options) {
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) { so.RateLimiter = ratelimit.None })
	}, putrecords.WithEncoder)
}

// BridgeOptions returns the bridge defaults wired to the rig, with a 50 ms flush window.
func (r *Rig) BridgeOptions() bridge.Options {
	o := bridge.NewOptions()
	if r.Lookupd != nil {
		o.LookupdHTTPAddresses = []string{r.Lookupd.HTTPAddr}
	} else {
		o.NSQDTCPAddresses = []string{r.NSQ.TCPAddr()}
		o.NSQDHTTPAddresses = []string{r.NSQ.HTTPAddr()}
	}
	o.Topic, o.Channel, o.DeadLetterTopic, o.Stream = r.Topic, r.Channel, r.DLTopic, r.Stream
	o.MaxBufferedTime = 50 * time.Millisecond
	o.BacklogInterval = time.Second
	return o
}

// WaitDrained waits until every message published to the topic is FINished on the bridge's
// channel and every dead letter was read: nsqd's own counts, not the bridge's.
func (r *Rig) WaitDrained(ctx context.Context, timeout time.Duration) error {
	return WaitFor(ctx, timeout, "NSQ drained (topic and dead-letter topic)", func() bool {
		return r.NSQ.Pending(r.Topic, r.Channel) == 0 && r.NSQ.Pending(r.DLTopic, dlChannel) == 0
	})
}

// ReadStream reads every shard of the stream, parents before children, and de-aggregates it.
func (r *Rig) ReadStream(ctx context.Context) ([]UserRec, int, error) {
	return ReadStream(ctx, r.KC, r.Stream)
}

// Observe reads the stream and takes the dead letters collected so far.
func (r *Rig) Observe(ctx context.Context) (Observed, int, error) {
	recs, n, err := r.ReadStream(ctx)
	if err != nil {
		return Observed{}, 0, err
	}
	return Observed{Stream: recs, DeadLetters: r.DL.All()}, n, nil
}

// Account tallies the observations, stores the tally in the result and returns it.
func (r *Rig) Account(o Observed) Accounting {
	a := r.Ledger.Account(o)
	r.t.res.Accounting = a
	return a
}

// ShardOrder lists a stream's shards, every parent before its children.
func ShardOrder(ctx context.Context, kc *kinesis.Client, stream string) ([]types.Shard, error) {
	var shards []types.Shard
	in := &kinesis.ListShardsInput{StreamName: aws.String(stream)}
	for {
		out, err := kc.ListShards(ctx, in)
		if err != nil {
			return nil, err
		}
		shards = append(shards, out.Shards...)
		if out.NextToken == nil {
			break
		}
		in = &kinesis.ListShardsInput{NextToken: out.NextToken}
	}
	done := map[string]bool{}
	known := map[string]bool{}
	for _, s := range shards {
		known[aws.ToString(s.ShardId)] = true
	}
	var order []types.Shard
	for len(order) < len(shards) {
		progress := false
		for _, s := range shards {
			id := aws.ToString(s.ShardId)
			p, ap := aws.ToString(s.ParentShardId), aws.ToString(s.AdjacentParentShardId)
			if !done[id] && (p == "" || done[p] || !known[p]) && (ap == "" || done[ap] || !known[ap]) {
				done[id] = true
				order = append(order, s)
				progress = true
			}
		}
		if !progress {
			return nil, fmt.Errorf("stream %s: shard lineage has a cycle", stream)
		}
	}
	return order, nil
}

// ReadStream reads every record of a stream, parents before children, each shard in sequence
// order, and de-aggregates them. It also returns the number of Kinesis records.
func ReadStream(ctx context.Context, kc *kinesis.Client, stream string) ([]UserRec, int, error) {
	order, err := ShardOrder(ctx, kc, stream)
	if err != nil {
		return nil, 0, err
	}
	var out []UserRec
	copies := map[[32]byte]int{}
	var d kpl.Deaggregator
	n := 0
	for _, s := range order {
		recs, err := kinesislocal.ReadShard(ctx, kc, stream, aws.ToString(s.ShardId))
		if err != nil {
			return nil, 0, err
		}
		for _, rec := range recs {
			n++
			first := len(out)
			out = appendUserRecs(out, &d, copies, rec.ShardID, aws.ToString(rec.SequenceNumber), rec.Data)
			for i := first; i < len(out); i++ {
				out[i].Arrival = aws.ToTime(rec.ApproximateArrivalTimestamp)
			}
		}
	}
	return out, n, nil
}

// appendUserRecs de-aggregates one Kinesis record. A record that is not an aggregate (the bridge
// never writes one) is taken as one user record, so that it is counted rather than hidden.
func appendUserRecs(out []UserRec, d *kpl.Deaggregator, copies map[[32]byte]int, shard, seq string, data []byte) []UserRec {
	dg := digest(data)
	cp := copies[dg]
	copies[dg]++
	urs, _, _ := d.Deaggregate(nil, data)
	for _, u := range urs {
		out = append(out, UserRec{Shard: shard, SeqNum: seq, Sub: u.SubSequence, Data: append([]byte(nil), u.Data...),
			RecDigest: dg, Copy: cp})
	}
	return out
}

// TapStream turns the tap's log of accepted entries into user records, per shard in sequence
// order (the stream as it was, even after the stream is gone).
func TapStream(recs []TapRecord) []UserRec {
	byShard := map[string][]TapRecord{}
	var shards []string
	for _, r := range recs {
		if _, ok := byShard[r.Shard]; !ok {
			shards = append(shards, r.Shard)
		}
		byShard[r.Shard] = append(byShard[r.Shard], r)
	}
	var out []UserRec
	copies := map[[32]byte]int{}
	var d kpl.Deaggregator
	for _, s := range shards {
		rs := byShard[s]
		sortBySeq(rs)
		for _, r := range rs {
			out = appendUserRecs(out, &d, copies, r.Shard, r.SeqNum, r.Data)
		}
	}
	return out
}

func sortBySeq(rs []TapRecord) {
	less := func(a, b string) bool {
		if len(a) != len(b) {
			return len(a) < len(b)
		}
		return a < b
	}
	for i := 1; i < len(rs); i++ { // insertion sort: the tap log is almost sorted
		for j := i; j > 0 && less(rs[j].SeqNum, rs[j-1].SeqNum); j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
}

// DeadLetters reads the dead-letter topic and keeps every envelope once (a dead-letter message
// redelivered to this reader, after an nsqd restart for example, is kept once).
type DeadLetters struct {
	c    *nsq.Consumer
	mu   sync.Mutex
	seen map[nsq.MessageID]bool
	envs []DeadLetter
	bad  int
}

func collectDeadLetters(addr, topic string) (*DeadLetters, error) {
	d := &DeadLetters{seen: map[nsq.MessageID]bool{}}
	cfg := nsq.NewConfig()
	cfg.MaxInFlight = 200
	cfg.LookupdPollInterval = time.Second // reconnect quickly after an nsqd restart
	c, err := nsq.NewConsumer(topic, dlChannel, cfg)
	if err != nil {
		return nil, err
	}
	c.SetLogger(nil, nsq.LogLevelError)
	c.AddHandler(nsq.HandlerFunc(func(m *nsq.Message) error {
		var e DeadLetter
		err := json.Unmarshal(m.Body, &e)
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.seen[m.ID] {
			return nil
		}
		d.seen[m.ID] = true
		if err != nil {
			d.bad++
			return nil
		}
		d.envs = append(d.envs, e)
		return nil
	}))
	if err := c.ConnectToNSQD(addr); err != nil {
		return nil, err
	}
	d.c = c
	return d, nil
}

// All returns the envelopes read so far.
func (d *DeadLetters) All() []DeadLetter {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]DeadLetter(nil), d.envs...)
}

// Len returns how many envelopes were read.
func (d *DeadLetters) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.envs)
}

// NotEnvelopes counts dead-letter messages that were not envelopes.
func (d *DeadLetters) NotEnvelopes() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.bad
}

// Stop disconnects.
func (d *DeadLetters) Stop() {
	d.c.Stop()
	<-d.c.StopChan
}

// DrainChannel consumes what is left on topic/channel (after the bridge exited), FINishing it,
// and returns the bodies. It stops when nsqd reports nothing pending on the channel.
func (r *Rig) DrainChannel(ctx context.Context, timeout time.Duration) ([][]byte, error) {
	var mu sync.Mutex
	var bodies [][]byte
	seen := map[nsq.MessageID]bool{}
	cfg := nsq.NewConfig()
	cfg.MaxInFlight = 1000
	c, err := nsq.NewConsumer(r.Topic, r.Channel, cfg)
	if err != nil {
		return nil, err
	}
	c.SetLogger(nil, nsq.LogLevelError)
	c.AddHandler(nsq.HandlerFunc(func(m *nsq.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if !seen[m.ID] {
			seen[m.ID] = true
			bodies = append(bodies, append([]byte(nil), m.Body...))
		}
		return nil
	}))
	if err := c.ConnectToNSQD(r.NSQ.TCPAddr()); err != nil {
		return nil, err
	}
	err = WaitFor(ctx, timeout, "the bridge's channel drained", func() bool { return r.NSQ.Pending(r.Topic, r.Channel) == 0 })
	c.Stop()
	<-c.StopChan
	mu.Lock()
	defer mu.Unlock()
	return bodies, err
}
