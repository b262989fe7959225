package bridge

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/nsqio/go-nsq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/kinesisfault"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/local/nsqlocal"
	"github.com/nsqk/nsqk/shared/shardmap"
)

func TestMain(m *testing.M) { localtest.Main(m) }

// kinesalite is the package's one kinesalite; each test uses its own stream.
func kinesalite(t testing.TB) *kinesislocal.Emulator {
	return localtest.SharedKinesis(t, kinesislocal.Options{})
}

type harness struct {
	t      *testing.T
	nsqd   *nsqlocal.NSQD
	kc     *kinesis.Client
	stream string
	topic  string
	reg    *prometheus.Registry
}

func newHarness(t *testing.T, shards int32) *harness {
	t.Helper()
	kc := kinesalite(t).Client()
	// Disk only: nsqd then delivers in publish order however deep the channel (with its memory
	// queue full it interleaves memory and disk), so the tests can check order by seq.
	n := localtest.NSQD(t, nsqlocal.Options{MsgTimeout: 10 * time.Second, DiskOnly: true})
	return &harness{t: t, nsqd: n, kc: kc, topic: "locations", reg: prometheus.NewRegistry(), stream: localtest.Stream(t, kc, shards)}
}

func (h *harness) options() Options {
	o := NewOptions()
	o.NSQDTCPAddresses = []string{h.nsqd.TCPAddr}
	o.NSQDHTTPAddresses = []string{h.nsqd.HTTPAddr}
	o.Topic, o.Stream = h.topic, h.stream
	o.MaxBufferedTime = 20 * time.Millisecond
	o.BacklogInterval = 100 * time.Millisecond
	return o
}

func (h *harness) publish(topic string, bodies [][]byte) {
	h.t.Helper()
	p, err := nsq.NewProducer(h.nsqd.TCPAddr, nsq.NewConfig())
	if err != nil {
		h.t.Fatal(err)
	}
	defer p.Stop()
	p.SetLogger(nil, nsq.LogLevelError)
	for i := 0; i < len(bodies); i += 100 {
		if err := p.MultiPublish(topic, bodies[i:min(i+100, len(bodies))]); err != nil {
			h.t.Fatal(err)
		}
	}
}

// running is a bridge started in the background.
type running struct {
	b      *Bridge
	cancel context.CancelFunc
	done   chan error
}

func (h *harness) start(o Options) *running {
	h.t.Helper()
	log := slog.New(slog.NewJSONHandler(testWriter{h.t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b, err := New(o, h.kc, log, h.reg)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{b: b, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- b.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// stop cancels the bridge's context (what SIGTERM does) and returns Run's result.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("bridge did not stop")
		return nil
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}

// waitFor polls cond until it holds or the timeout expires.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// userRecord is a user record read back from the stream.
type userRecord struct {
	shard string
	seq   string // Kinesis sequence number of the carrying record
	sub   int
	pk    string
	data  []byte
	outer string // outer partition key
}

// readStream reads and de-aggregates everything in the stream, in shard order.
func (h *harness) readStream() []userRecord {
	h.t.Helper()
	recs, err := kinesislocal.ReadAll(context.Background(), h.kc, h.stream)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []userRecord
	var d kpl.Deaggregator
	for _, r := range recs {
		urs, agg, err := d.Deaggregate(nil, r.Data)
		if err != nil || !agg {
			h.t.Fatalf("record %s on %s: aggregated=%v err=%v", *r.SequenceNumber, r.ShardID, agg, err)
		}
		for _, u := range urs {
			out = append(out, userRecord{shard: r.ShardID, seq: *r.SequenceNumber, sub: u.SubSequence,
				pk: string(u.PartitionKey), data: append([]byte(nil), u.Data...), outer: *r.PartitionKey})
		}
	}
	return out
}

func (h *harness) shardMap() *shardmap.Map {
	m, err := shardmap.Load(context.Background(), h.kc, h.stream)
	if err != nil {
		h.t.Fatal(err)
	}
	return m
}

// collector consumes a topic (the dead-letter topic) and keeps the envelopes.
type collector struct {
	mu   sync.Mutex
	envs []Envelope
	c    *nsq.Consumer
}

func (h *harness) collect(topic string) *collector {
	h.t.Helper()
	col := &collector{}
	c, err := nsq.NewConsumer(topic, "test", nsq.NewConfig())
	if err != nil {
		h.t.Fatal(err)
	}
	c.SetLogger(nil, nsq.LogLevelError)
	c.AddHandler(nsq.HandlerFunc(func(m *nsq.Message) error {
		var e Envelope
		if err := json.Unmarshal(m.Body, &e); err != nil {
			h.t.Errorf("dead-letter message is not an envelope: %v: %s", err, m.Body)
		}
		col.mu.Lock()
		col.envs = append(col.envs, e)
		col.mu.Unlock()
		return nil
	}))
	if err := c.ConnectToNSQD(h.nsqd.TCPAddr); err != nil {
		h.t.Fatal(err)
	}
	col.c = c
	h.t.Cleanup(c.Stop)
	return col
}

func (c *collector) all() []Envelope {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Envelope(nil), c.envs...)
}

// faultFront puts a fault-injecting Kinesis front in front of kinesalite and points the harness's
// client at it; the front closes with the test.
func (h *harness) faultFront() *kinesisfault.Front {
	h.t.Helper()
	front, err := kinesisfault.Start(kinesalite(h.t).Endpoint)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { front.Close() })
	h.kc = kinesislocal.NewClient(front.URL)
	return front
}
