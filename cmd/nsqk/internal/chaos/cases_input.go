package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nsqio/go-nsq"

	"github.com/nsqk/nsqk/shared/bridge"
)

var jsonUnmarshal = json.Unmarshal

// badClass is one class of bad input: make(i) returns its i-th distinct body.
type badClass struct {
	name   string
	reason bridge.Reason
	make   func(i int) []byte
}

// badClasses are the bad-input classes published through nsqd. Bodies are distinct (i varies a
// field or the padding) because a body identifies its message.
func badClasses(recordLimit int) []badClass {
	return []badClass{
		{"no key field", bridge.ReasonMissingKey, func(i int) []byte { return fmt.Appendf(nil, `{"seq":%d,"note":"no user_id"}`, i) }},
		{"empty key", bridge.ReasonEmptyKey, func(i int) []byte { return fmt.Appendf(nil, `{"user_id":"","seq":%d}`, i) }},
		{"key over 256 characters", bridge.ReasonKeyTooLong, func(i int) []byte {
			return fmt.Appendf(nil, `{"user_id":"%s","seq":%d}`, strings.Repeat("k", 257+i), i)
		}},
		{"key of 257 multibyte characters", bridge.ReasonKeyTooLong, func(i int) []byte {
			return fmt.Appendf(nil, `{"user_id":"%s","seq":%d}`, strings.Repeat("é", 257), i)
		}},
		{"non-UTF-8 key", bridge.ReasonKeyNotUTF8, func(i int) []byte { return fmt.Appendf(nil, "{\"user_id\":\"u\xff\xfe%d\",\"seq\":1}", i) }},
		{"key is a number", bridge.ReasonKeyWrongType, func(i int) []byte { return fmt.Appendf(nil, `{"user_id":%d,"seq":1}`, 1000+i) }},
		{"key is an object", bridge.ReasonKeyWrongType, func(i int) []byte { return fmt.Appendf(nil, `{"user_id":{"id":"u%d"},"seq":1}`, i) }},
		{"key is null", bridge.ReasonKeyWrongType, func(i int) []byte { return fmt.Appendf(nil, `{"user_id":null,"seq":%d}`, i) }},
		{"key is a boolean", bridge.ReasonKeyWrongType, func(i int) []byte { return fmt.Appendf(nil, `{"user_id":true,"seq":%d}`, i) }},
		{"invalid JSON (truncated)", bridge.ReasonInvalidJSON, func(i int) []byte { return fmt.Appendf(nil, `{"user_id":"u%d","seq":`, i) }},
		{"not JSON (binary)", bridge.ReasonInvalidJSON, func(i int) []byte { return fmt.Appendf(nil, "\x89PNG\r\n\x1a\n\x00\x00%d\xff", i) }},
		{"trailing garbage", bridge.ReasonInvalidJSON, func(i int) []byte { return fmt.Appendf(nil, `{"user_id":"u%d","seq":1} x`, i) }},
		{"raw NUL byte in body", bridge.ReasonInvalidJSON, func(i int) []byte { return fmt.Appendf(nil, "{\"user_id\":\"u1\",\x00\"seq\":%d}", i) }},
		{"escaped NUL in key", bridge.ReasonKeyControlChar, func(i int) []byte { return fmt.Appendf(nil, `{"user_id":"u\u0000%d","seq":1}`, i) }},
		{"newline in key", bridge.ReasonKeyControlChar, func(i int) []byte { return fmt.Appendf(nil, `{"user_id":"u\n%d","seq":1}`, i) }},
		{"deeply nested JSON", bridge.ReasonTooDeep, func(i int) []byte {
			return fmt.Appendf(nil, `{"user_id":"u%d","a":%s1%s}`, i, strings.Repeat(`{"b":`, 100+i), strings.Repeat("}", 100+i))
		}},
		{"top-level array", bridge.ReasonMissingKey, func(i int) []byte { return fmt.Appendf(nil, `[%d,"u1"]`, i) }},
		{"whitespace only", bridge.ReasonInvalidJSON, func(i int) []byte { return []byte(strings.Repeat(" ", i+1)) }},
		{fmt.Sprintf("body over the record limit (%d KiB, --max-record-size %d KiB)", (recordLimit+36<<10)>>10, recordLimit>>10), bridge.ReasonTooLarge,
			func(i int) []byte {
				return fmt.Appendf(nil, `{"user_id":"u%09d","seq":1,"pad":"%s"}`, i, strings.Repeat("p", recordLimit+36<<10))
			}},
	}
}

func inputCases() []Case {
	return []Case{
		{
			Name: "bad-input", Group: "input", Quick: true,
			Summary: "19 classes of bad input (5 of each) interleaved with location messages, plus an empty body (refused by nsqd: injected into the bridge's handler)",
			Rule: "every bad message dead-lettered once with its class's reason and never in the stream; the empty body too (its FIN seen); " +
				"location messages exactly-once and in order; nsqd refuses empty bodies",
			Run: badInput,
		},
		{
			Name: "bad-input-oversize", Group: "input",
			Summary: "bad messages near nsqd's 1 MiB --max-msg-size with the bridge defaults: a 1 MiB location message (too large for a 1 MiB record with its key), " +
				"1 MiB of invalid JSON, 800 KB of binary (base64 in the envelope)",
			Rule: "each dead-lettered with its reason within 30 s (quick: 15 s), never in the stream; location messages exactly-once",
			Run:  badInputOversize,
		},
	}
}

func badInput(ctx context.Context, t *T) error {
	r, err := t.NewRig(ctx, RigOptions{Shards: 2})
	if err != nil {
		return err
	}
	// Evidence for the empty-body class: nsqd refuses it on every publish path.
	refused := probeEmptyPublish(r)
	t.Note("nsqd and empty bodies: %s", refused)
	t.Check("nsqd refuses an empty body (so only the handler path can be tested)", strings.Count(refused, "body size 0") == 3, "%s", refused)

	const recordLimit = 64 << 10
	o := r.BridgeOptions()
	o.MaxRecordSize = recordLimit
	b, err := r.StartReady(ctx, o)
	if err != nil {
		return err
	}
	pub, err := r.NewPublisher(100, 31)
	if err != nil {
		return err
	}
	classes := badClasses(recordLimit)
	const perClass = 5
	rounds := t.N(20, 10)
	for round := range rounds {
		if err := pub.Publish(100); err != nil {
			return err
		}
		// Spread the bad messages over the rounds: each round publishes some of them.
		for ci, c := range classes {
			for i := range perClass {
				if (ci*perClass+i)%rounds != round {
					continue
				}
				body := c.make(i)
				if err := pub.PublishBodies([][]byte{body}, false); err != nil {
					return fmt.Errorf("%s: %w", c.name, err)
				}
				r.Ledger.Bad(c.name, c.reason, body)
			}
		}
	}
	t.Event("published %d location messages and %d bad ones in %d classes", r.Ledger.GoodCount(), len(classes)*perClass, len(classes))

	// The empty body cannot come through nsqd: hand one to the running bridge's handler as go-nsq
	// would, and watch what it does with it.
	fin := injectEmpty(b.B, r.NSQ.TCPAddr())
	r.Ledger.Bad("empty body (handler path)", bridge.ReasonEmptyBody, []byte{})

	if err := r.WaitDrained(ctx, 2*time.Minute); err != nil {
		return err
	}
	if err := WaitFor(ctx, 30*time.Second, "the empty-body message answered", func() bool { return fin.answered() }); err != nil {
		t.Check("empty-body message FINished after dead-lettering", false, "%v", err)
	} else {
		t.Check("empty-body message FINished after dead-lettering", fin.finished(), "FIN %v, REQ %v", fin.finished(), fin.requeued())
	}
	end, err := r.EndInProc(ctx, b, time.Minute)
	if err != nil {
		return err
	}
	a := end.A
	var failedClasses []string
	for name, ct := range a.BadByClass {
		if ct.DeadLettered != ct.Published || ct.InStream > 0 {
			failedClasses = append(failedClasses, fmt.Sprintf("%s: %d/%d dead-lettered as %s, wrong %v, %d in stream", name, ct.DeadLettered, ct.Published, ct.Reason, ct.WrongReason, ct.InStream))
		}
	}
	t.Check("every class dead-lettered with its reason", len(failedClasses) == 0, "%s", orNone(failedClasses))
	t.Judge(a, Expect{})
	return nil
}

// probeEmptyPublish tries an empty body on nsqd's TCP PUB, MPUB and DPUB.
func probeEmptyPublish(r *Rig) string {
	var parts []string
	for _, try := range []struct {
		name string
		f    func(p *nsq.Producer) error
	}{
		// []byte{}, not nil: go-nsq writes no size at all for a nil body.
		{"PUB", func(p *nsq.Producer) error { return p.Publish("probe", []byte{}) }},
		{"MPUB", func(p *nsq.Producer) error { return p.MultiPublish("probe", [][]byte{[]byte("x"), {}}) }},
		{"DPUB", func(p *nsq.Producer) error { return p.DeferredPublish("probe", time.Second, []byte{}) }},
	} {
		p, err := nsq.NewProducer(r.NSQ.TCPAddr(), nsq.NewConfig())
		if err != nil {
			return err.Error()
		}
		p.SetLogger(nil, nsq.LogLevelError)
		if err := try.f(p); err != nil {
			parts = append(parts, try.name+": "+err.Error())
		} else {
			parts = append(parts, try.name+": accepted")
		}
		p.Stop()
	}
	return strings.Join(parts, "; ")
}

// fakeDelegate records how the bridge answered a message handed to it directly.
type fakeDelegate struct {
	mu       sync.Mutex
	fin, req bool
}

func (d *fakeDelegate) OnFinish(*nsq.Message) { d.mu.Lock(); d.fin = true; d.mu.Unlock() }
func (d *fakeDelegate) OnRequeue(*nsq.Message, time.Duration, bool) {
	d.mu.Lock()
	d.req = true
	d.mu.Unlock()
}
func (d *fakeDelegate) OnTouch(*nsq.Message) {}
func (d *fakeDelegate) answered() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fin || d.req
}
func (d *fakeDelegate) finished() bool { d.mu.Lock(); defer d.mu.Unlock(); return d.fin }
func (d *fakeDelegate) requeued() bool { d.mu.Lock(); defer d.mu.Unlock(); return d.req }

// injectEmpty hands an empty-body message to the bridge's handler as go-nsq would deliver it.
func injectEmpty(b *bridge.Bridge, nsqdAddr string) *fakeDelegate {
	var id nsq.MessageID
	copy(id[:], "0e0e0e0e0e0e0e0e")
	m := nsq.NewMessage(id, []byte{})
	m.Attempts = 1
	m.Timestamp = time.Now().UnixNano()
	m.NSQDAddress = nsqdAddr
	d := &fakeDelegate{}
	m.Delegate = d
	b.HandleMessage(m)
	return d
}

// badInputOversize publishes bad messages whose dead-letter envelope cannot fit in nsqd's default
// 1 MiB message limit, with the bridge's default record limit (1 MiB).
func badInputOversize(ctx context.Context, t *T) error {
	r, err := t.NewRig(ctx, RigOptions{Shards: 1})
	if err != nil {
		return err
	}
	b, err := r.StartReady(ctx, r.BridgeOptions())
	if err != nil {
		return err
	}
	pub, err := r.NewPublisher(20, 37)
	if err != nil {
		return err
	}
	const nsqdMax = 1 << 20
	head := `{"user_id":"u000000001","seq":1,"pad":"`
	big := []byte(head + strings.Repeat("p", nsqdMax-len(head)-2) + `"}`)
	invalid := []byte(`{"user_id":"u2","pad":"` + strings.Repeat("q", nsqdMax-40))
	binary := make([]byte, 800<<10)
	for i := range binary {
		binary[i] = byte(i*7) | 0x80
	}
	if err := pub.Publish(200); err != nil {
		return err
	}
	for _, m := range []struct {
		name   string
		reason bridge.Reason
		body   []byte
	}{
		{"1 MiB location message (too large with its key)", bridge.ReasonTooLarge, big},
		{"1 MiB invalid JSON", bridge.ReasonInvalidJSON, invalid},
		{"800 KB binary", bridge.ReasonInvalidJSON, binary},
	} {
		if err := pub.PublishBodies([][]byte{m.body}, false); err != nil {
			return fmt.Errorf("%s (%d bytes): %w", m.name, len(m.body), err)
		}
		r.Ledger.Bad(m.name, m.reason, m.body)
	}
	if err := pub.Publish(200); err != nil {
		return err
	}
	t.Event("published 400 location messages and 3 bad ones of %d, %d and %d bytes", len(big), len(invalid), len(binary))
	err = WaitFor(ctx, t.Dur(30*time.Second, 15*time.Second), "3 dead letters", func() bool { return r.DL.Len() >= 3 })
	if err != nil {
		t.Note("%v: %d dead letters; NSQ still holds %d messages", err, r.DL.Len(), r.NSQ.Pending(r.Topic, r.Channel))
	}
	mf := b.Metrics()
	st, _ := r.NSQ.Channel(r.Topic, r.Channel)
	t.Note("nsqd: %d requeues of the bridge's channel; bridge: %.0f dead-letter publish failures", st.RequeueCount, mf.Value("nsqk_bridge_dead_letter_failures_total"))
	if lines := grepFile(r.t.Dir+"/bridge.log", "dead-letter publish failed"); len(lines) > 0 {
		t.Note("bridge log (%d such lines): %s", len(lines), first(lines))
	}
	r.StopInProc(b)
	back, err := r.DrainChannel(ctx, 30*time.Second)
	if err != nil {
		return err
	}
	obs, _, err := r.Observe(ctx)
	if err != nil {
		return err
	}
	obs.BackInNSQ, obs.HaveBackInNSQ = back, true
	a := r.Account(obs)
	noteBridge(t, mf)
	if a.DLTruncated > 0 {
		t.Note("%d dead letters carried a truncated body (matched by body_sha256)", a.DLTruncated)
	}
	t.Judge(a, Expect{})
	return nil
}
