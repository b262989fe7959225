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

// The memory forgets a key by when it was last put, not by its value (an NSQ publish time), and
// a key put again stays.
func TestAgeMapForgetsByLastPut(t *testing.T) {
	t0 := time.Now()
	a := newAgeMap[uint64, int64](time.Minute, 0, nil)
	put := func(k uint64, v int64, at time.Time) {
		_, g := a.get(k)
		a.put(k, v, g, at)
	}
	old := t0.Add(-time.Hour).UnixNano() // a backlog published an hour ago
	for k := uint64(1); k <= 3; k++ {
		put(k, old, t0)
	}
	put(3, old+1, t0.Add(50*time.Second)) // key 3 seen again
	a.expire(t0.Add(59 * time.Second))
	for k := uint64(1); k <= 3; k++ {
		if _, g := a.get(k); g < 0 {
			t.Fatalf("key %d forgotten 59s after it was put, window 1m", k)
		}
	}
	a.expire(t0.Add(76 * time.Second)) // past 1.25 x the window for keys 1 and 2
	for k, want := range map[uint64]bool{1: false, 2: false, 3: true} {
		if _, g := a.get(k); (g >= 0) != want {
			t.Fatalf("key %d remembered=%v at 76s, want %v", k, g >= 0, want)
		}
	}
	if v, _ := a.get(3); v != old+1 || a.len() != 1 {
		t.Fatalf("key 3 = %d, %d entries", v, a.len())
	}
	a.expire(t0.Add(50*time.Second + 76*time.Second))
	if a.len() != 0 || len(a.gens) != 0 {
		t.Fatalf("%d entries, %d generations after every window passed", a.len(), len(a.gens))
	}
}

// Beyond the budget the oldest keys are forgotten early and counted; the slots held never exceed
// the budget.
func TestAgeMapBudget(t *testing.T) {
	evicted := 0
	a := newAgeMap[uint64, int64](time.Hour, 1000, func(n int) { evicted += n })
	t0 := time.Now()
	for k := range uint64(10_000) {
		a.put(k, 1, -1, t0.Add(time.Duration(k)*time.Millisecond))
		if a.slots > 1000 {
			t.Fatalf("%d slots after %d puts, budget 1000", a.slots, k+1)
		}
	}
	if a.len()+evicted != 10_000 || evicted == 0 {
		t.Fatalf("%d remembered + %d evicted, want 10000", a.len(), evicted)
	}
	if _, g := a.get(9_999); g < 0 {
		t.Fatal("the newest key was evicted")
	}
	if _, g := a.get(0); g >= 0 {
		t.Fatal("the oldest key survived")
	}
}

// Forgetting works on whole generations: however many keys pass through, the memory holds a
// handful of generations, so an expiry pass and a lookup cost a few map operations, never a walk
// over the keys.
func TestAgeMapGenerationsStayFew(t *testing.T) {
	a := newAgeMap[uint64, int64](time.Minute, 0, nil)
	t0 := time.Now()
	for i := range 600_000 { // 10 minutes at 1,000 new keys a second
		now := t0.Add(time.Duration(i) * time.Millisecond)
		k := uint64(i)
		_, g := a.get(k)
		a.put(k, 1, g, now)
		if i%1000 == 0 {
			a.expire(now)
		}
		if len(a.gens) > 6 {
			t.Fatalf("%d generations after %d keys", len(a.gens), i+1)
		}
	}
	if n := a.len(); n < 60_000 || n > 76_000 {
		t.Fatalf("%d keys remembered, want the last 60-75 s of them", n)
	}
}
