package nullsink

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/nsqio/nsq/nsqd"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nsqk/nsqk/cmd/nsqk/internal/promq"
	"github.com/nsqk/nsqk/shared/bridge"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/local/nsqlocal"
)

// runBridge publishes msgs to an embedded nsqd, runs the real bridge into the sink until every
// message is acknowledged, stops it (as SIGTERM does) and returns the bridge's metrics.
// poll, if set, is called every 10 ms while the bridge runs.
func runBridge(t *testing.T, s *Server, msgs []genMsg, tune func(*bridge.Options), poll func()) promq.Families {
	t.Helper()
	n := localtest.NSQD(t, nsqlocal.Options{MemQueueSize: int64(len(msgs)) + 100})
	const topic = "locations"
	tp := n.GetTopic(topic)
	tp.GetChannel("nsqk")
	batch := make([]*nsqd.Message, 0, len(msgs))
	for _, g := range msgs {
		batch = append(batch, nsqd.NewMessage(tp.GenerateID(), g.body))
	}
	if err := tp.PutMessages(batch); err != nil {
		t.Fatal(err)
	}

	o := bridge.NewOptions()
	o.NSQDTCPAddresses = []string{n.TCPAddr}
	o.Topic, o.Stream, o.MaxBufferedTime = topic, s.Stream(), 20*time.Millisecond
	o.MaxInFlight = 500
	if tune != nil {
		tune(&o)
	}
	reg := prometheus.NewRegistry()
	kc := kinesislocal.NewClient(s.URL, func(ko *kinesis.Options) { ko.RetryMaxAttempts = 1 })
	b, err := bridge.New(o, kc, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		f, _ := promq.Gather(reg)
		if int(f.Value("nsqk_bridge_messages_acked_total")) >= len(msgs) && n.Depth(topic, "nsqk") == 0 {
			break
		}
		if poll != nil {
			poll()
		}
		if time.Now().After(deadline) {
			t.Fatalf("not drained: acked %v, depth %d", f.Value("nsqk_bridge_messages_acked_total"), n.Depth(topic, "nsqk"))
		}
		select {
		case err := <-done:
			t.Fatalf("bridge stopped: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("bridge shutdown: %v", err)
	}
	f, err := promq.Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestBridgeIntoSinkExactlyOnce(t *testing.T) {
	msgs, expect := generate(4000, 500)
	v := NewVerifier(expect)
	s, err := Start(Config{Shards: 4, Verifier: v})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f := runBridge(t, s, msgs, nil, nil)
	r := v.Result()
	if !r.OK || r.Unique != 4000 {
		t.Fatalf("verification: %s %v", r.Summary(), r.Problems)
	}
	st := s.Stats()
	if got := f.Value("nsqk_bridge_bytes_out_total"); int64(got) != st.RecordBytes {
		t.Fatalf("bridge says %v bytes out, the sink accepted %d", got, st.RecordBytes)
	}
	if got := f.Value("nsqk_bridge_bytes_in_total"); int64(got) != st.UserBytes {
		t.Fatalf("bridge read %v bytes, the sink saw %d bytes of user data", got, st.UserBytes)
	}
	if got := f.Value("nsqk_bridge_aggregates_total"); int64(got) != st.EntriesAccepted || st.Aggregated != st.EntriesAccepted {
		t.Fatalf("bridge wrote %v records, the sink accepted %d (%d aggregates)", got, st.EntriesAccepted, st.Aggregated)
	}
	for _, sh := range st.Shards {
		if sh.UserRecords == 0 {
			t.Fatalf("shard %s got nothing: %+v", sh.ID, st.Shards)
		}
	}
}

// thawClock stands still until thaw, then runs at the real pace: a throttle on it refills only
// once the test has seen throttling happen.
type thawClock struct {
	mu     sync.Mutex
	t0     time.Time
	thawed time.Time
}

func (c *thawClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.thawed.IsZero() {
		return c.t0
	}
	return c.t0.Add(time.Since(c.thawed))
}

func (c *thawClock) thaw() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.thawed.IsZero() {
		c.thawed = time.Now()
	}
}

// TestBridgeThrottledKeepsOrder: against a throttling sink the bridge retries, and the records
// still arrive exactly once and in order per user (strict ordering).
func TestBridgeThrottledKeepsOrder(t *testing.T) {
	msgs, expect := generate(3000, 200)
	v := NewVerifier(expect)
	clk := &thawClock{t0: time.Now()}
	// 2 x 300 KiB of burst for ~800 KB: with the clock frozen, throttling is certain.
	s, err := Start(Config{Shards: 2, Verifier: v, Throttle: true, BytesPerSecond: 300 << 10, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f := runBridge(t, s, msgs, func(o *bridge.Options) {
		o.RetryInitial, o.RetryMax = 5*time.Millisecond, 50*time.Millisecond
		o.MaxBufferedTime = 5 * time.Millisecond
	}, func() {
		if st := s.Stats(); st.EntriesThrottled >= 3 {
			clk.thaw()
		}
	})
	r := v.Result()
	if !r.OK {
		t.Fatalf("verification: %s %v", r.Summary(), r.Problems)
	}
	st := s.Stats()
	if st.EntriesThrottled == 0 || f.Value("nsqk_bridge_putrecords_failed_entries_total") != float64(st.EntriesThrottled) {
		t.Fatalf("throttled %d entries, the bridge counted %v failures", st.EntriesThrottled, f.Value("nsqk_bridge_putrecords_failed_entries_total"))
	}
}
