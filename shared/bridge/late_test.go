package bridge

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// redeliverReversed publishes u1#1, u1#2, u2#1, has another consumer on the bridge's channel take
// them and requeue them newest first (what NSQ does to the messages of a crashed consumer: they
// come back behind newer ones).
func redeliverReversed(t *testing.T, h *harness, channel string) {
	t.Helper()
	msgs := []string{`{"user_id":"u1","seq":1}`, `{"user_id":"u1","seq":2}`, `{"user_id":"u2","seq":1}`}
	for _, m := range msgs { // one PUB each: distinct, increasing nsqd timestamps
		h.publish(h.topic, [][]byte{[]byte(m)})
	}
	got := make(chan *nsq.Message, 3)
	cfg := nsq.NewConfig()
	cfg.MaxInFlight = 10
	c, err := nsq.NewConsumer(h.topic, channel, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetLogger(nil, nsq.LogLevelError)
	c.AddHandler(nsq.HandlerFunc(func(m *nsq.Message) error {
		m.DisableAutoResponse()
		got <- m
		return nil
	}))
	if err := c.ConnectToNSQD(h.nsqd.TCPAddr); err != nil {
		t.Fatal(err)
	}
	var held []*nsq.Message
	for len(held) < 3 {
		select {
		case m := <-got:
			held = append(held, m)
		case <-time.After(10 * time.Second):
			t.Fatal("messages not delivered")
		}
	}
	// RDY 0 first, or nsqd hands the requeued messages straight back to this consumer.
	c.ChangeMaxInFlight(0)
	waitFor(t, 10*time.Second, "RDY 0", func() bool { return c.Stats().Connections == 1 && c.IsStarved() })
	for i := len(held) - 1; i >= 0; i-- {
		held[i].RequeueWithoutBackoff(0)
	}
	c.Stop()
	<-c.StopChan
	waitFor(t, 10*time.Second, "requeued messages back in the channel", func() bool {
		return h.nsqd.Depth(h.topic, channel) == 3
	})
}

func TestLateRedeliveryIsDeadLetteredInStrictMode(t *testing.T) {
	h := newHarness(t, 1)
	o := h.options()
	dead := h.collect(o.Topic + "_dead")
	redeliverReversed(t, h, o.Channel)
	r := h.start(o)
	waitFor(t, 30*time.Second, "2 written, 1 dead-lettered", func() bool {
		return testutil.ToFloat64(r.b.m.messagesAcked) == 2 && len(dead.all()) == 1
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	env := dead.all()[0]
	if env.Reason != ReasonLate || env.Body == nil || *env.Body != `{"user_id":"u1","seq":1}` || env.Attempts != 2 {
		t.Fatalf("dead letter %+v", env)
	}
	var stream []string
	for _, u := range h.readStream() {
		stream = append(stream, string(u.data))
	}
	if len(stream) != 2 || !slices.Contains(stream, `{"user_id":"u1","seq":2}`) || !slices.Contains(stream, `{"user_id":"u2","seq":1}`) {
		t.Fatalf("stream %v, want u1#2 and u2#1 only", stream)
	}
	if testutil.ToFloat64(r.b.m.late) != 1 {
		t.Fatal("late redelivery not counted")
	}
}

func TestLateRedeliveryIsWrittenWhenAsked(t *testing.T) {
	h := newHarness(t, 1)
	o := h.options()
	o.LateRedelivery = LateWrite
	redeliverReversed(t, h, o.Channel)
	r := h.start(o)
	waitFor(t, 30*time.Second, "3 written", func() bool { return testutil.ToFloat64(r.b.m.messagesAcked) == 3 })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	var seqs []int
	for _, u := range h.readStream() {
		var m struct{ Seq int }
		json.Unmarshal(u.data, &m)
		if u.pk == "u1" {
			seqs = append(seqs, m.Seq)
		}
	}
	if len(seqs) != 2 || seqs[0] != 2 || seqs[1] != 1 {
		t.Fatalf("u1 records in stream order: %v, want [2 1] (late message written after the newer one)", seqs)
	}
	if testutil.ToFloat64(r.b.m.late) != 1 {
		t.Fatal("late redelivery not counted")
	}
}

func TestFenceFindSetPrune(t *testing.T) {
	f := newFence()
	for k := uint64(1); k <= 5; k++ {
		if i := f.find(k); i != -1 {
			t.Fatalf("unknown key %d found at %d", k, i)
		}
		f.set(-1, k, int64(k*100))
	}
	f.set(f.find(3), 3, 350)
	f.prune(300) // forgets keys 1 and 2 (100, 200); keeps 3 (350), 4, 5
	for k, want := range map[uint64]int64{1: -1, 2: -1, 3: 350, 4: 400, 5: 500} {
		i := f.find(k)
		if want < 0 {
			if i != -1 {
				t.Fatalf("key %d survived the prune", k)
			}
			continue
		}
		if i < 0 || f.newest(i) != want {
			t.Fatalf("key %d: index %d newest %d, want %d", k, i, f.newest(i), want)
		}
	}
	if len(f.ts) != 3 || len(f.idx) != 3 {
		t.Fatalf("%d timestamps, %d index entries after the prune", len(f.ts), len(f.idx))
	}
}
