package nullsink

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nsqk/nsqk/shared/location"
	"github.com/nsqk/nsqk/shared/shardmap"
)

type genMsg struct {
	body []byte
	user string
	seq  uint64
}

func generate(n, users int) ([]genMsg, []uint64) {
	gen := location.NewGenerator(users, 42)
	expect := make([]uint64, users)
	out := make([]genMsg, n)
	for i := range out {
		b, u, s := gen.Next(nil)
		out[i] = genMsg{b, u, s}
		un, _ := userNumber([]byte(u))
		expect[un] = s
	}
	return out, expect
}

func TestParseLocationFastPathMatchesJSON(t *testing.T) {
	msgs, _ := generate(2000, 300)
	for _, m := range msgs {
		u, seq, ts, ok := parseLocation(m.body)
		want, err := location.Parse(m.body)
		if !ok || err != nil || string(u) != want.UserID || seq != want.Seq || ts != want.TS {
			t.Fatalf("%s: got %s %d %d %v, want %+v", m.body, u, seq, ts, ok, want)
		}
	}
	// Other field orders and spellings go through encoding/json.
	for _, body := range []string{
		`{"seq":7,"user_id":"u000000001","ts":5}`,
		`{"user_id":"u000000001","seq":07,"ts":5}`, // not JSON: rejected
		`{"user_id":"u\u0030000000001","seq":7,"ts":5}`,
		`{"user_id":"u000000001","seq":7,"ts":5 }`,
	} {
		u, seq, ts, ok := parseLocation([]byte(body))
		var want location.Message
		err := json.Unmarshal([]byte(body), &want)
		if ok != (err == nil) || ok && (string(u) != want.UserID || seq != want.Seq || ts != want.TS) {
			t.Fatalf("%s: got %q %d %d %v, want %+v (%v)", body, u, seq, ts, ok, want, err)
		}
	}
	if _, _, _, ok := parseLocation([]byte("not json")); ok {
		t.Fatal("parsed garbage")
	}
}

func TestVerifierExactlyOnce(t *testing.T) {
	msgs, expect := generate(3000, 100)
	m, _ := shardmap.New(ShardRanges(4))
	shardOf := func(u string) int { return m.Lookup(shardmap.HashKey(u)) }

	v := NewVerifier(expect)
	v.CheckShards(m)
	for _, g := range msgs {
		v.Observe(shardOf(g.user), []byte(g.user), g.body)
	}
	if r := v.Result(); !r.OK || r.Unique != 3000 || r.Expected != 3000 || r.Received != 3000 || len(r.Problems) != 0 {
		t.Fatalf("clean run: %+v", r)
	}

	type fault struct {
		name  string
		feed  func(v *Verifier)
		check func(r Verification) bool
	}
	faults := []fault{
		{"missing", func(v *Verifier) {
			for _, g := range msgs[1:] {
				v.Observe(shardOf(g.user), []byte(g.user), g.body)
			}
		}, func(r Verification) bool { return r.Missing == 1 && r.Unique == 2999 }},
		{"duplicate", func(v *Verifier) {
			for _, g := range append(msgs, msgs[10]) {
				v.Observe(shardOf(g.user), []byte(g.user), g.body)
			}
		}, func(r Verification) bool { return r.Duplicates == 1 && r.Missing == 0 && r.OutOfOrder == 0 }},
		{"reordered", func(v *Verifier) {
			var a, b int // two messages of the same user, swapped
			for i := range msgs {
				if msgs[i].user == msgs[0].user && i > 0 {
					b = i
					break
				}
			}
			for i := range msgs {
				j := i
				switch i {
				case a:
					j = b
				case b:
					j = a
				}
				v.Observe(shardOf(msgs[j].user), []byte(msgs[j].user), msgs[j].body)
			}
		}, func(r Verification) bool { return r.OutOfOrder == 1 && r.Missing == 0 && r.Duplicates == 0 }},
		{"wrong shard and key", func(v *Verifier) {
			for i, g := range msgs {
				sh, key := shardOf(g.user), g.user
				if i == 5 {
					sh = (sh + 1) % 4
				}
				if i == 6 {
					key = "someone-else"
				}
				v.Observe(sh, []byte(key), g.body)
			}
		}, func(r Verification) bool { return r.WrongShard == 1 && r.KeyMismatch == 1 && r.Missing == 0 }},
		{"unexpected and unparsed", func(v *Verifier) {
			for _, g := range msgs {
				v.Observe(-1, nil, g.body)
			}
			v.Observe(-1, nil, []byte(`{"user_id":"u000000001","seq":999999,"ts":1}`))
			v.Observe(-1, nil, []byte(`{"user_id":"stranger","seq":1,"ts":1}`))
			v.Observe(-1, nil, []byte(`garbage`))
		}, func(r Verification) bool { return r.Unexpected == 2 && r.Unparsed == 1 && r.Unique == 3002 }},
	}
	for _, f := range faults {
		v := NewVerifier(expect)
		v.CheckShards(m)
		f.feed(v)
		r := v.Result()
		if r.OK || !f.check(r) || len(r.Problems) == 0 {
			t.Errorf("%s: %+v", f.name, r)
		}
	}
}

func TestVerifierWithoutExpectation(t *testing.T) {
	msgs, _ := generate(500, 20)
	v := NewVerifier(nil)
	for _, g := range msgs {
		v.Observe(0, nil, g.body)
	}
	v.Observe(0, nil, msgs[3].body)
	r := v.Result()
	if r.OK || r.Duplicates != 1 || r.Expected != 0 || r.Unique != 500 {
		t.Fatalf("%+v", r)
	}
}

func TestVerifierLatency(t *testing.T) {
	v := NewVerifier(nil)
	now := time.UnixMilli(10_000)
	v.latNow = func() time.Time { return now }
	v.RecordLatency(time.UnixMilli(9_000))
	v.Observe(0, nil, []byte(`{"user_id":"u000000001","seq":1,"ts":8999}`)) // before the window
	v.Observe(0, nil, []byte(`{"user_id":"u000000001","seq":2,"ts":9990}`))
	if l := v.Latencies(); len(l) != 1 || l[0] != 10 {
		t.Fatalf("%v", l)
	}
}
