package bridge

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/nsqio/go-nsq"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nsqk/nsqk/shared/local/kinesisfault"
	"github.com/nsqk/nsqk/shared/shardmap"
)

// unitBridge is a bridge that is not running, with a shard map of n equal shards installed, for
// tests of its routing and request packing. It talks to nothing.
func unitBridge(t *testing.T, o Options, n int) *Bridge {
	t.Helper()
	o.NSQDTCPAddresses, o.Topic, o.Stream = []string{"127.0.0.1:1"}, "t", "s"
	b, err := New(o, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.dl.close)
	b.maxSize = b.o.maxRecordSize()
	b.install(equalShards(t, n, 0), time.Time{})
	return b
}

// equalShards returns a map of n shards of equal width with ids shardId-<first+i>.
func equalShards(t *testing.T, n, first int) *shardmap.Map {
	t.Helper()
	var shards []shardmap.Shard
	for i := range n {
		var s, e shardmap.Hash
		s[0], e[0] = byte(256*i/n), byte(256*(i+1)/n-1)
		for j := 1; j < 16; j++ {
			e[j] = 0xff
		}
		shards = append(shards, shardmap.Shard{ID: shardID(first + i), Start: s, End: e})
	}
	m, err := shardmap.New(shards)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func shardID(i int) string { return "shardId-" + string(rune('0'+i/10)) + string(rune('0'+i%10)) }

// testMsg is an NSQ message that is not connected to any nsqd; its delegate records the answer.
type testMsg struct {
	*nsq.Message
	fin, req int
}

func (m *testMsg) OnFinish(*nsq.Message)                       { m.fin++ }
func (m *testMsg) OnRequeue(*nsq.Message, time.Duration, bool) { m.req++ }
func (m *testMsg) OnTouch(*nsq.Message)                        {}

func newTestMsg(id, addr string, attempts uint16, body []byte) *testMsg {
	var mid nsq.MessageID
	copy(mid[:], id)
	tm := &testMsg{Message: nsq.NewMessage(mid, body)}
	tm.Attempts, tm.NSQDAddress, tm.Timestamp = attempts, addr, time.Now().UnixNano()
	tm.Delegate = tm
	return tm
}

// A record larger than 5 MiB (streams may allow 10 MiB records) alone in a request is sent: the
// request limit is what PutRecords accepts, and an entry is never skipped when the request is empty.
func TestBigRecordIsSentAloneAndNeverSkipped(t *testing.T) {
	o := NewOptions()
	o.MaxRecordSize = 10 << 20
	b := unitBridge(t, o, 1)
	l := b.lanes[0]
	big := append(append([]byte(`{"user_id":"u","pad":"`), bytes.Repeat([]byte("x"), 7<<20)...), '"', '}')
	b.mu.Lock()
	if err := b.addToLane(l, msgRef{s: &slot{m: newTestMsg("0000000000000001", "a", 1, big).Message}, key: "u", hash: shardmap.HashKey("u")}, time.Now()); err != nil {
		b.mu.Unlock()
		t.Fatal(err)
	}
	b.seal(l)
	b.mu.Unlock()
	req, _ := b.buildRequest(time.Now())
	if len(req) != 1 {
		t.Fatalf("request of %d entries, want the one 7 MiB entry", len(req))
	}
}

// The record limit never exceeds what one PutRecords request accepts, so every aggregate a lane
// builds while it waits can be sent.
func TestRecordLimitBoundedByRequestLimit(t *testing.T) {
	o := NewOptions()
	o.NSQDTCPAddresses, o.Topic, o.Stream = []string{"x"}, "t", "s"
	o.MaxRecordSize = 11 << 20
	if err := o.Validate(); err == nil {
		t.Fatal("--max-record-size of 11 MiB accepted; PutRecords takes at most 10 MiB per request")
	}
}

// When an entry does not fit in a request that already holds others, the next request starts
// with it, so a big entry is not passed over indefinitely by smaller ones of other lanes.
func TestEntryThatDoesNotFitStartsTheNextRequest(t *testing.T) {
	o := NewOptions()
	o.MaxRecordSize = 10 << 20
	o.KeyBuckets = 3
	b := unitBridge(t, o, 1)
	now := time.Now()
	body := func(n int) []byte {
		return append(append([]byte(`{"pad":"`), bytes.Repeat([]byte("x"), n)...), '"', '}')
	}
	b.mu.Lock()
	for i, size := range []int{4 << 20, 9 << 20, 4 << 20} {
		l := b.lanes[i]
		if err := b.addToLane(l, msgRef{s: &slot{m: newTestMsg("000000000000000"+string(rune('1'+i)), "a", 1, body(size)).Message}, key: "k"}, now); err != nil {
			b.mu.Unlock()
			t.Fatal(err)
		}
		b.seal(l)
	}
	b.mu.Unlock()
	seen := map[*lane]bool{}
	for range 3 {
		req, _ := b.buildRequest(now)
		if len(req) == 0 {
			t.Fatalf("empty request with %d of 3 lanes sent", len(seen))
		}
		size := 0
		for _, e := range req {
			seen[e.lane] = true
			size += e.size()
		}
		if size > maxRequestBytes {
			t.Fatalf("request of %d bytes", size)
		}
		if len(seen) == 3 {
			return
		}
	}
	t.Fatalf("after 3 requests only %d of 3 lanes were sent", len(seen))
}

// flushAll seals every lane and completes every request as Kinesis would accept it, on the shard
// each lane predicts.
func flushAll(t *testing.T, b *Bridge) {
	t.Helper()
	b.mu.Lock()
	for _, l := range b.lanes {
		b.seal(l)
	}
	b.mu.Unlock()
	for range 1000 {
		req, _ := b.buildRequest(time.Now())
		if len(req) == 0 {
			return
		}
		out := &kinesis.PutRecordsOutput{Records: make([]types.PutRecordsResultEntry, len(req))}
		for i, e := range req {
			out.Records[i] = types.PutRecordsResultEntry{ShardId: aws.String(e.lane.shard.ID), SequenceNumber: aws.String("1")}
		}
		b.complete(req, out, nil)
	}
	t.Fatal("lanes never drained")
}

func hexID(i int) string { return fmt.Sprintf("%016x", i) }

func userBody(user string, seq int) []byte {
	return []byte(fmt.Sprintf(`{"user_id":%q,"seq":%d}`, user, seq))
}

// A key is remembered from when the bridge last accepted one of its messages, not from its NSQ
// publish time: while a backlog older than --late-window is caught up, a crash's redelivery of
// an older message of the key is still recognised as late.
func TestFenceRemembersKeysOfABacklogOlderThanTheWindow(t *testing.T) {
	o := NewOptions()
	o.LateWindow = time.Minute
	b := unitBridge(t, o, 1)
	published := time.Now().Add(-time.Hour) // the backlog was published an hour ago
	for i := 1; i <= 2; i++ {
		m := newTestMsg(hexID(i), "nsqd:4150", 1, userBody("u1", i))
		m.Timestamp = published.Add(time.Duration(i) * time.Second).UnixNano()
		b.HandleMessage(m.Message)
	}
	b.housekeep(time.Now()) // a housekeeping tick while catching up
	// The previous bridge held u1#0 when it crashed: nsqd delivers it again, behind u1#1 and #2.
	r := newTestMsg(hexID(0), "nsqd:4150", 2, userBody("u1", 0))
	r.Timestamp = published.UnixNano()
	b.HandleMessage(r.Message)
	if testutil.ToFloat64(b.m.late) != 1 {
		t.Fatal("the redelivery of an older message of a key seen a moment ago was not recognised as late")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if n := len(b.lanes[0].held()); n != 2 {
		t.Fatalf("%d messages in the lane, want 2 (the late one goes to the dead-letter topic)", n)
	}
}

// A message whose FIN was lost comes back after the message timeout (30-60 s): the bridge still
// knows it wrote it, however many messages it wrote since, and FINishes it without writing it
// again.
func TestRedeliveryOfAWrittenMessageIsRecognisedAfterManyOthers(t *testing.T) {
	o := NewOptions()
	o.MaxInFlight = 10
	b := unitBridge(t, o, 1)
	for i := 1; i <= 500; i++ {
		b.HandleMessage(newTestMsg(hexID(i), "nsqd:4150", 1, userBody(fmt.Sprint("u", i), 1)).Message)
		if i%10 == 0 {
			flushAll(t, b)
		}
	}
	flushAll(t, b)
	r := newTestMsg(hexID(1), "nsqd:4150", 2, userBody("u1", 1))
	b.HandleMessage(r.Message)
	if r.fin != 1 || b.Held() != 0 {
		t.Fatalf("redelivery of a written message: fin=%d, %d held; want it FINished at once", r.fin, b.Held())
	}
	if got := testutil.ToFloat64(b.m.redelivered.WithLabelValues("written")); got != 1 {
		t.Fatalf("redelivered{state=written} = %v", got)
	}
}

// Two nsqd with the same --node-id can issue the same message id: a message from one is neither
// taken for a written message of the other nor joined to a held one.
func TestSameIDFromAnotherNSQDIsAnotherMessage(t *testing.T) {
	o := NewOptions()
	b := unitBridge(t, o, 1)
	b.HandleMessage(newTestMsg(hexID(7), "nsqd-a:4150", 1, userBody("a", 1)).Message)
	flushAll(t, b)
	other := newTestMsg(hexID(7), "nsqd-b:4150", 2, userBody("b", 1))
	b.HandleMessage(other.Message)
	if other.fin != 0 || b.Held() != 1 {
		t.Fatalf("message of nsqd-b with the id of one written from nsqd-a: fin=%d, held %d; want it held to be written", other.fin, b.Held())
	}
	third := newTestMsg(hexID(8), "nsqd-a:4150", 1, userBody("c", 1))
	b.HandleMessage(third.Message)
	held8 := newTestMsg(hexID(8), "nsqd-b:4150", 2, userBody("d", 1))
	b.HandleMessage(held8.Message)
	b.mu.Lock()
	n := len(b.lanes[0].held())
	b.mu.Unlock()
	if n != 3 {
		t.Fatalf("%d messages held in the lane, want 3 (same id from two nsqd is two messages)", n)
	}
	flushAll(t, b)
	if other.fin != 1 || third.fin != 1 || held8.fin != 1 {
		t.Fatalf("FINs after the write: %d %d %d", other.fin, third.fin, held8.fin)
	}
}

// A key whose record a reshard put on a child shard keeps going to that child after the new shard
// map is installed, even when more of its messages arrive between the misroute and the install.
func TestStickyKeySurvivesUntilTheNewMapIsInstalled(t *testing.T) {
	o := NewOptions()
	b := unitBridge(t, o, 1)
	children := equalShards(t, 2, 1) // shardId-01 (lower half), shardId-02 (upper half)
	user := ""
	for i := 0; user == ""; i++ { // a key the new map puts on shardId-02
		if u := fmt.Sprint("user", i); children.Shards()[children.Lookup(shardmap.HashKey(u))].ID == "shardId-02" {
			user = u
		}
	}
	b.HandleMessage(newTestMsg(hexID(1), "nsqd:4150", 1, userBody(user, 1)).Message)
	// Kinesis stores the aggregate on shardId-01: the parent was split and the aggregate's explicit
	// hash key (the parent's start) is in the lower child.
	b.mu.Lock()
	b.seal(b.lanes[0])
	b.mu.Unlock()
	req, _ := b.buildRequest(time.Now())
	b.complete(req, &kinesis.PutRecordsOutput{Records: []types.PutRecordsResultEntry{{ShardId: aws.String("shardId-01"), SequenceNumber: aws.String("1")}}}, nil)
	// The key's next message arrives before the refreshed map is in place.
	b.HandleMessage(newTestMsg(hexID(2), "nsqd:4150", 1, userBody(user, 2)).Message)
	b.apply(children)
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.lanes {
		if len(l.held()) > 0 && l.shard.ID != "shardId-01" {
			t.Fatalf("%s#2 is on %s after the install; its previous record is on shardId-01", user, l.shard.ID)
		}
	}
	if n := len(b.lanes[0].held()) + len(b.lanes[1].held()); n != 1 {
		t.Fatalf("%d messages held, want 1", n)
	}
}

// A shard map refresh that fails after a misroute is retried with backoff, not only at the next
// --shard-refresh tick: the paused lanes wait seconds, not the refresh interval.
func TestFailedRefreshAfterMisrouteIsRetriedSoon(t *testing.T) {
	h := newHarness(t, 1)
	front := h.faultFront()
	o := h.options()
	o.ShardRefresh = time.Minute
	b, err := New(o, h.kc, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.dl.close)
	b.maxSize = b.o.maxRecordSize()
	b.install(h.shardMap(), time.Time{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.refreshLoop(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	front.Set(kinesisfault.Faults{Operations: []string{"ListShards"}, RequestErrorRate: 1,
		RequestErrorStatus: 400, RequestErrorType: "AccessDeniedException"})
	b.mu.Lock()
	b.stale, b.lanes[0].paused = true, true // what a misrouted record leaves behind
	b.mu.Unlock()
	b.signal(b.refresh)
	waitFor(t, 10*time.Second, "a failed refresh", func() bool { return front.Stats().RequestErrors > 0 })
	front.Set(kinesisfault.Faults{})
	waitFor(t, 10*time.Second, "the lane to resume (refresh interval 1m)", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return !b.lanes[0].paused
	})
}

// --fixed-key is checked at start-up like any partition key: a key Kinesis or the consumers would
// refuse must not surface only when the first message without a key arrives.
func TestFixedKeyValidatedLikeAnyKey(t *testing.T) {
	for _, k := range []string{"", "a\x01b", "bad\xff", strings.Repeat("😀", 129)} {
		o := NewOptions()
		o.NSQDTCPAddresses, o.Topic, o.Stream = []string{"x"}, "t", "s"
		o.MissingKey, o.FixedKey = MissingKeyFixed, k
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "--fixed-key") {
			t.Errorf("--fixed-key %q: Validate() = %v", k, err)
		}
	}
	o := NewOptions()
	o.NSQDTCPAddresses, o.Topic, o.Stream = []string{"x"}, "t", "s"
	o.MissingKey, o.FixedKey = MissingKeyFixed, strings.Repeat("é", 256)
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
}

// An entry that failed in a way that may have written it (a timeout) is kept whole when its lane
// is retired by a reshard: it is sent again as the same record, so a duplicate is the whole record
// next to the original, and the keys it carries follow it to the child shard it goes to.
func TestRetiredLanesPossiblyWrittenEntryIsKeptWhole(t *testing.T) {
	o := NewOptions()
	b := unitBridge(t, o, 1)
	children := equalShards(t, 2, 1)
	var low, high string // keys of the lower and the upper child
	for i := 0; low == "" || high == ""; i++ {
		u := fmt.Sprint("user", i)
		if children.Lookup(shardmap.HashKey(u)) == 0 {
			low = u
		} else {
			high = u
		}
	}
	b.HandleMessage(newTestMsg(hexID(1), "n:4150", 1, userBody(low, 1)).Message)
	b.HandleMessage(newTestMsg(hexID(2), "n:4150", 1, userBody(high, 1)).Message)
	b.mu.Lock()
	b.seal(b.lanes[0])
	b.mu.Unlock()
	req, _ := b.buildRequest(time.Now())
	rec := append([]byte(nil), req[0].rec.Data...)
	b.complete(req, nil, context.DeadlineExceeded) // may or may not have been written
	b.HandleMessage(newTestMsg(hexID(3), "n:4150", 1, userBody(high, 2)).Message)
	b.apply(children)

	b.mu.Lock()
	defer b.mu.Unlock()
	var whole *entry
	for _, l := range b.lanes {
		for _, e := range l.queue {
			if bytes.Equal(e.rec.Data, rec) {
				whole = e
			}
		}
	}
	if whole == nil {
		t.Fatal("the possibly written entry was taken apart and re-aggregated")
	}
	l := whole.lane
	if l.shard.ID != "shardId-01" || l.queue[0] != whole || whole.attempts != 1 {
		t.Fatalf("entry on %s at queue position %d, attempts %d; want the head of shardId-01 (its explicit hash key's shard)",
			l.shard.ID, slices.Index(l.queue, whole), whole.attempts)
	}
	held := l.held()
	if len(held) != 3 || string(held[2].s.m.Body) != string(userBody(high, 2)) {
		t.Fatalf("shardId-01's lane holds %d messages; want the entry's 2 and then %s#2, which follows its key's retried record", len(held), high)
	}
}

// Both memories must outlast the message timeout: that is when nsqd redelivers what a lost
// connection or a crash left unanswered.
func TestWindowsAtLeastTheMessageTimeout(t *testing.T) {
	for _, tc := range []struct {
		name          string
		late, written time.Duration
		want          string
	}{
		{"late window shorter", 30 * time.Second, time.Minute, "--late-window"},
		{"written window shorter", time.Minute, 30 * time.Second, "--written-window"},
	} {
		o := NewOptions()
		o.MsgTimeout, o.LateWindow, o.WrittenWindow = time.Minute, tc.late, tc.written
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want an error about %s", tc.name, err, tc.want)
		}
	}
	o := NewOptions()
	o.MsgTimeout, o.LateWindow, o.WrittenWindow = time.Minute, time.Minute, time.Minute
	if err := o.Validate(); err != nil && (strings.Contains(err.Error(), "--late-window") || strings.Contains(err.Error(), "--written-window")) {
		t.Errorf("windows equal to the timeout refused: %v", err)
	}
}
