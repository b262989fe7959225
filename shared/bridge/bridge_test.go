package bridge

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/location"
	"github.com/nsqk/nsqk/shared/shardmap"
)

// badInputs are the bad-input classes and the reason each must be dead-lettered with.
var badInputs = []struct {
	body   string
	reason Reason
}{
	{`{"seq":1}`, ReasonMissingKey},
	{`{"user_id":""}`, ReasonEmptyKey},
	{`{"user_id":"` + strings.Repeat("k", 257) + `"}`, ReasonKeyTooLong},
	{"{\"user_id\":\"bad\xff\xfekey\"}", ReasonKeyNotUTF8},
	{`{"user_id":12345}`, ReasonKeyWrongType},
	{`{"user_id":"x",`, ReasonInvalidJSON},
	{"{\"user_id\":\"x\",\"note\":\"nul\x00byte\"}", ReasonInvalidJSON},
	{`{"user_id":"x","deep":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, ReasonTooDeep},
	{`{"user_id":"a\u0001b"}`, ReasonKeyControlChar},
	{`[]`, ReasonMissingKey},
}

func TestBridgeWritesEveryMessageOnceInOrderAndDeadLettersBadInput(t *testing.T) {
	h := newHarness(t, 4)
	o := h.options()
	o.KeyBuckets = 3
	o.MaxRecordSize = 64 << 10 // small records: many aggregates per shard, several per request
	dead := h.collect(o.Topic + "_dead")

	// 50k messages over 5k keys, with the bad inputs spread among them.
	gen := location.NewGenerator(5000, 42)
	var bodies [][]byte
	type sent struct {
		user string
		seq  uint64
	}
	var good []sent
	for i := 0; i < 50000; i++ {
		b, u, s := gen.Next(nil)
		bodies = append(bodies, b)
		good = append(good, sent{u, s})
		if i%4000 == 0 && i/4000 < len(badInputs) {
			bodies = append(bodies, []byte(badInputs[i/4000].body))
		}
	}
	// An empty body cannot be published through nsqd (it refuses it); a body over the record limit can.
	bodies = append(bodies, append([]byte(`{"user_id":"huge","pad":"`), append(bytes.Repeat([]byte("x"), 70<<10), '"', '}')...))
	h.publish(o.Topic, bodies)

	r := h.start(o)
	waitFor(t, 60*time.Second, "all messages acknowledged", func() bool {
		return testutil.ToFloat64(r.b.m.messagesAcked) == float64(len(good)) && len(dead.all()) == len(badInputs)+1
	})
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := h.nsqd.Depth(o.Topic, o.Channel); d != 0 {
		t.Fatalf("nsqd still holds %d messages", d)
	}

	// Every good message exactly once; per user, seq strictly increasing in stream order; each
	// user on the shard MD5 says, always under the same outer partition key (its bucket).
	m := h.shardMap()
	recs := h.readStream()
	if len(recs) != len(good) {
		t.Fatalf("stream holds %d user records, published %d good messages", len(recs), len(good))
	}
	last := map[string]uint64{}
	outer := map[string]string{}
	for _, u := range recs {
		msg, err := location.Parse(u.data)
		if err != nil {
			t.Fatalf("record on %s: %v", u.shard, err)
		}
		if msg.UserID != u.pk {
			t.Fatalf("partition key %q carries user %q", u.pk, msg.UserID)
		}
		if want := m.Shards()[m.Lookup(shardmap.HashKey(u.pk))].ID; u.shard != want {
			t.Fatalf("user %s on %s, MD5 says %s", u.pk, u.shard, want)
		}
		if msg.Seq != last[u.pk]+1 {
			t.Fatalf("user %s: seq %d after %d (lost, duplicated or reordered)", u.pk, msg.Seq, last[u.pk])
		}
		last[u.pk] = msg.Seq
		if o, ok := outer[u.pk]; ok && o != u.outer {
			t.Fatalf("user %s travelled under outer keys %q and %q", u.pk, o, u.outer)
		}
		outer[u.pk] = u.outer
	}
	buckets := map[string]bool{}
	for _, o := range outer {
		buckets[o] = true
	}
	if len(outer) != 5000 || len(buckets) != 3 {
		t.Fatalf("%d users under outer partition keys %v, want 5000 users in the 3 buckets", len(outer), buckets)
	}
	if n := testutil.ToFloat64(r.b.m.aggregates); n >= float64(len(good))/10 {
		t.Fatalf("%v Kinesis records for %d messages: aggregation is not working", n, len(good))
	}

	// Bad input: one envelope per bad message, with its reason and the original body.
	want := map[Reason]int{ReasonTooLarge: 1}
	for _, b := range badInputs {
		want[b.reason]++
	}
	got := map[Reason]int{}
	for _, e := range dead.all() {
		got[e.Reason]++
		if e.Detail == "" || e.MessageID == "" || e.Attempts != 1 || e.Topic != o.Topic || e.Timestamp.IsZero() {
			t.Fatalf("incomplete envelope: %+v", e)
		}
		if e.Reason == ReasonKeyNotUTF8 && (e.Body != nil || !bytes.Contains(e.BodyBase64, []byte("\xff\xfe"))) {
			t.Fatalf("non-UTF-8 body not carried as base64: %+v", e)
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("dead-lettered by reason: got %v, want %v", got, want)
		}
	}
	if n := testutil.ToFloat64(r.b.m.deadLettered.WithLabelValues(string(ReasonKeyWrongType))); n != 1 {
		t.Fatalf("dead_lettered_total{reason=key_wrong_type} = %v", n)
	}
}

func TestShutdownFlushesEverythingAndReturnsNil(t *testing.T) {
	h := newHarness(t, 2)
	o := h.options()
	o.MaxBufferedTime = time.Hour // only the shutdown can flush
	gen := location.NewGenerator(50, 7)
	var bodies [][]byte
	for i := 0; i < 500; i++ {
		b, _, _ := gen.Next(nil)
		bodies = append(bodies, b)
	}
	h.publish(o.Topic, bodies)
	r := h.start(o)
	waitFor(t, 30*time.Second, "all messages received", func() bool { return r.b.Held() == 500 })
	if n := testutil.ToFloat64(r.b.m.aggregates); n != 0 {
		t.Fatalf("%v records written before the shutdown with a 1h buffer time", n)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run after shutdown: %v", err)
	}
	if got := len(h.readStream()); got != 500 {
		t.Fatalf("stream holds %d records after shutdown, want 500", got)
	}
	if d := h.nsqd.Depth(o.Topic, o.Channel); d != 0 {
		t.Fatalf("nsqd still holds %d messages after shutdown (not FINished)", d)
	}
	if r.b.Held() != 0 {
		t.Fatalf("bridge still holds %d", r.b.Held())
	}
}

// --record-keys=lane: user records share the aggregate's keys (one table entry each), which cuts
// the bytes written per message; the explicit hash key stays inside the shard's range.
func TestLaneRecordKeysShareOneKeyAndWriteFewerBytes(t *testing.T) {
	ratio := func(keys RecordKeys) (float64, []userRecord, *harness) {
		h := newHarness(t, 2)
		o := h.options()
		o.RecordKeys, o.KeyBuckets = keys, 2
		publishLocations(h, 1000, 1000)
		r := h.start(o)
		waitFor(t, 30*time.Second, "acknowledged", func() bool { return testutil.ToFloat64(r.b.m.messagesAcked) == 1000 })
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
		checkStream(t, h, 1000)
		return testutil.ToFloat64(r.b.m.bytesOut) / testutil.ToFloat64(r.b.m.bytesIn), h.readStream(), h
	}
	userRatio, _, _ := ratio(RecordKeysUser)
	laneRatio, recs, h := ratio(RecordKeysLane)
	m := h.shardMap()
	for _, u := range recs {
		if u.pk != u.outer {
			t.Fatalf("user record key %q, aggregate key %q", u.pk, u.outer)
		}
	}
	raw, err := kinesislocal.ReadAll(context.Background(), h.kc, h.stream)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range raw {
		urs, _, _ := kpl.Deaggregate(r.Data)
		s := m.Shards()[m.Index(r.ShardID)]
		for _, u := range urs {
			ehk, err := shardmap.ParseHash(string(u.ExplicitHashKey))
			if err != nil || ehk.Compare(s.Start) < 0 || ehk.Compare(s.End) > 0 {
				t.Fatalf("user record EHK %q outside %s", u.ExplicitHashKey, s.ID)
			}
		}
	}
	t.Logf("bytes out/in: user keys %.4f, lane keys %.4f", userRatio, laneRatio)
	if laneRatio >= userRatio-0.02 || laneRatio > 1.05 {
		t.Fatalf("lane keys ratio %.4f vs user keys %.4f: expected about 12 bytes less per message and <= 1.05", laneRatio, userRatio)
	}
}

// SIGTERM in the middle of a stream: the first bridge writes and FINishes everything it took and
// returns nil; a second bridge takes the rest from NSQ. Every message is in the stream exactly once,
// in order.
func TestSigtermMidStreamLosesAndDuplicatesNothing(t *testing.T) {
	h := newHarness(t, 2)
	o := h.options()
	const total = 20000
	gen := location.NewGenerator(500, 9)
	bodies := make([][]byte, total)
	for i := range bodies {
		bodies[i], _, _ = gen.Next(nil)
	}
	published := make(chan struct{})
	go func() { // publish while the bridge runs
		defer close(published)
		h.publish(o.Topic, bodies)
	}()
	first := h.start(o)
	waitFor(t, 60*time.Second, "the first bridge to be mid-stream", func() bool {
		return testutil.ToFloat64(first.b.m.messagesAcked) >= total/4
	})
	if err := first.stop(t); err != nil {
		t.Fatalf("first bridge: %v", err)
	}
	firstAcked := testutil.ToFloat64(first.b.m.messagesAcked)
	if firstAcked >= total || testutil.ToFloat64(first.b.m.messagesIn) != firstAcked {
		t.Fatalf("first bridge took %v and acked %v: not a mid-stream stop, or something left unacknowledged",
			testutil.ToFloat64(first.b.m.messagesIn), firstAcked)
	}
	<-published
	h.reg = prometheus.NewRegistry()
	second := h.start(o)
	waitFor(t, 60*time.Second, "the second bridge to take the rest", func() bool {
		return firstAcked+testutil.ToFloat64(second.b.m.messagesAcked) == total
	})
	if err := second.stop(t); err != nil {
		t.Fatalf("second bridge: %v", err)
	}
	if oc := checkStream(t, h, total); oc.dups != 0 {
		t.Fatalf("%d duplicates after a graceful stop", oc.dups)
	}
	if n := testutil.ToFloat64(second.b.m.late); n != 0 {
		t.Fatalf("%v late redeliveries after a graceful stop: the first bridge left messages unanswered", n)
	}
}
