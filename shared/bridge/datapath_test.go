package bridge

import (
	"bytes"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"

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

func (m *testMsg) OnFinish(*nsq.Message)                     { m.fin++ }
func (m *testMsg) OnRequeue(*nsq.Message, time.Duration, bool) { m.req++ }
func (m *testMsg) OnTouch(*nsq.Message)                      {}

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
