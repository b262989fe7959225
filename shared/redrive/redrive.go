// Package redrive puts the bridge's dead letters back: it consumes the dead-letter topic and
// publishes each envelope's original body to the original topic, FINishing the envelope only once
// nsqd has accepted the publish. Optionally it first looks for the message in the Kinesis stream
// and FINishes envelopes whose message is already there without publishing them again.
//
// Envelopes it does not redrive (filtered out, truncated bodies, not envelopes at all) are held
// while it runs and requeued with no delay when it ends, so they stay on the channel for the next
// run; holding them rather than requeueing at once keeps nsqd from handing them straight back.
package redrive

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nsqio/go-nsq"
	"github.com/tidwall/gjson"

	"github.com/nsqk/nsqk/shared/bridge"
	"github.com/nsqk/nsqk/shared/logread"
)

// DefaultChannel is the dead-letter topic's channel redrive reads.
const DefaultChannel = "nsqk_redrive"

// Options configures a redrive.
type Options struct {
	// NSQDTCPAddress is the nsqd holding the dead-letter topic; redriven bodies are published
	// to the same nsqd.
	NSQDTCPAddress string
	Topic          string // the dead-letter topic
	Channel        string // default DefaultChannel
	// ToTopic, if set, receives every redriven body instead of the envelope's topic.
	ToTopic string
	// Reasons, if set, redrives only envelopes with one of these reasons.
	Reasons []string
	// Since and Until, if set, redrive only envelopes whose original message was published to
	// NSQ (the envelope's timestamp) in [Since, Until).
	Since, Until time.Time
	// SkipPresent looks for each message in Stream first (see the package doc); Kinesis reads
	// it. The search starts at the envelope's timestamp minus Lookback (default 5 min).
	SkipPresent bool
	Stream      string
	Kinesis     logread.Kinesis
	Lookback    time.Duration
	// PartitionKey is the bridge's --partition-key (a JSON path into the body; default
	// user_id): it says which shard holds a message. A body without one is searched for in
	// every shard.
	PartitionKey string
	// DryRun publishes and FINishes nothing; the summary says what would have happened.
	DryRun bool
	// Idle ends the redrive once no envelope has arrived for this long (default 2 s).
	Idle time.Duration
	// MaxInFlight bounds the envelopes held at once (default 2500, nsqd's default
	// --max-rdy-count). Held envelopes are the ones kept; once this many are kept no more can
	// be looked at in this run (the summary says so).
	MaxInFlight int
	// Warn receives warnings (go-nsq's included).
	Warn func(string)
}

// Counts is what happened to the envelopes of one reason.
type Counts struct {
	Redriven int // published to the original topic and FINished
	Present  int // already in the stream: FINished without publishing
	Kept     int // left in the dead-letter topic (filtered out, truncated, not an envelope)
	// Truncated counts the kept envelopes whose body was truncated: they can never be redriven.
	Truncated int
	// Duplicate counts envelopes of a message already redriven (or found) in this run: FINished.
	Duplicate int
}

// Summary is the outcome of a redrive, by envelope reason.
type Summary struct {
	ByReason map[string]*Counts
	// Full reports that MaxInFlight envelopes were kept: envelopes behind them were not seen.
	Full   bool
	DryRun bool
}

// Total adds up the counts of every reason.
func (s *Summary) Total() Counts {
	var t Counts
	for _, c := range s.ByReason {
		t.Redriven += c.Redriven
		t.Present += c.Present
		t.Kept += c.Kept
		t.Truncated += c.Truncated
		t.Duplicate += c.Duplicate
	}
	return t
}

// Reasons returns the reasons seen, sorted.
func (s *Summary) Reasons() []string {
	var rs []string
	for r := range s.ByReason {
		rs = append(rs, r)
	}
	sort.Strings(rs)
	return rs
}

func (s *Summary) of(reason string) *Counts {
	c := s.ByReason[reason]
	if c == nil {
		c = &Counts{}
		s.ByReason[reason] = c
	}
	return c
}

// NotAnEnvelope is the reason under which messages that are not envelopes are counted.
const NotAnEnvelope = "not_an_envelope"

const (
	batchMax  = 1000
	batchGap  = 100 * time.Millisecond
	mpubBytes = 1 << 20
	mpubCount = 200
)

type run struct {
	o    Options
	sum  *Summary
	c    *nsq.Consumer
	p    *nsq.Producer
	in   chan *nsq.Message
	held map[nsq.MessageID]*nsq.Message // not answered yet; requeued when the run ends
	kept map[nsq.MessageID]bool         // held on purpose until the end
	done map[string]bool                // original messages redriven or found in this run
	// start: envelopes dead-lettered after it are left for the next run, so that a redrive ends
	// even while new dead letters keep coming (or its own redriven messages come back).
	start time.Time
	// active is when the last envelope from before the start arrived (idle is measured from it).
	active time.Time
}

// Run redrives until the dead-letter channel is idle, ctx ends or an error occurs. Whatever it
// has not FINished is requeued (no delay) before it returns.
func Run(ctx context.Context, o Options) (*Summary, error) {
	if o.NSQDTCPAddress == "" || o.Topic == "" {
		return nil, errors.New("redrive: an nsqd TCP address and the dead-letter topic are required")
	}
	if o.ToTopic != "" && !nsq.IsValidTopicName(o.ToTopic) {
		return nil, fmt.Errorf("redrive: %q is not a valid NSQ topic name", o.ToTopic)
	}
	if o.SkipPresent && (o.Stream == "" || o.Kinesis == nil) {
		return nil, errors.New("redrive: --skip-present needs --stream")
	}
	if o.Channel == "" {
		o.Channel = DefaultChannel
	}
	if o.Lookback <= 0 {
		o.Lookback = 5 * time.Minute
	}
	if o.PartitionKey == "" {
		o.PartitionKey = "user_id"
	}
	if o.Idle <= 0 {
		o.Idle = 2 * time.Second
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 2500
	}
	if o.Warn == nil {
		o.Warn = func(string) {}
	}
	r := &run{o: o, sum: &Summary{ByReason: map[string]*Counts{}, DryRun: o.DryRun}, in: make(chan *nsq.Message, o.MaxInFlight),
		held: map[nsq.MessageID]*nsq.Message{}, kept: map[nsq.MessageID]bool{}, done: map[string]bool{}, start: time.Now()}
	r.active = r.start
	cfg := nsq.NewConfig()
	cfg.MaxInFlight = o.MaxInFlight
	var err error
	if r.p, err = nsq.NewProducer(o.NSQDTCPAddress, nsq.NewConfig()); err != nil {
		return nil, err
	}
	defer r.p.Stop()
	r.p.SetLogger(warnLogger(o.Warn), nsq.LogLevelWarning)
	if r.c, err = nsq.NewConsumer(o.Topic, o.Channel, cfg); err != nil {
		return nil, err
	}
	// go-nsq warns when a consumer stops with no connection left: errors only.
	r.c.SetLogger(warnLogger(o.Warn), nsq.LogLevelError)
	r.c.AddHandler(nsq.HandlerFunc(func(m *nsq.Message) error {
		m.DisableAutoResponse()
		r.in <- m
		return nil
	}))
	if err := r.c.ConnectToNSQD(o.NSQDTCPAddress); err != nil {
		return nil, fmt.Errorf("redrive: connect to nsqd %s: %w", o.NSQDTCPAddress, err)
	}
	defer r.finish()
	err = r.loop(ctx)
	if len(r.kept) >= o.MaxInFlight {
		r.sum.Full = true
	}
	return r.sum, err
}

// finish requeues everything not FINished and disconnects. Messages still on their way to the
// handler are requeued as they arrive, until the consumer has stopped.
func (r *run) finish() {
	r.c.ChangeMaxInFlight(0)
	for _, m := range r.held {
		m.RequeueWithoutBackoff(0)
	}
	r.c.Stop()
	for {
		select {
		case m := <-r.in:
			m.RequeueWithoutBackoff(0)
		case <-r.c.StopChan:
			return
		}
	}
}

func (r *run) loop(ctx context.Context) error {
	touch := time.NewTicker(15 * time.Second) // go-nsq's default msg_timeout is 60 s
	defer touch.Stop()
	for {
		start := time.Now()
		batch, err := r.collect(ctx, touch.C)
		if err != nil || len(batch) == 0 {
			return err
		}
		if err := r.process(ctx, batch); err != nil {
			return err
		}
		// Time spent deciding (reading the stream) is not time waiting for envelopes.
		if !r.active.Before(start) {
			r.active = time.Now()
		}
	}
}

// collect waits for envelopes: it returns a batch once they stop coming for a moment (or the
// batch is full), and an empty batch once none has come for Idle.
func (r *run) collect(ctx context.Context, touch <-chan time.Time) ([]*nsq.Message, error) {
	var batch []*nsq.Message
	idle := time.NewTimer(time.Until(r.active.Add(r.o.Idle)))
	defer idle.Stop()
	for {
		wait := idle.C
		var gap <-chan time.Time
		if len(batch) > 0 {
			gap = time.After(batchGap)
		}
		select {
		case <-ctx.Done():
			for _, m := range batch {
				r.held[m.ID] = m
			}
			return nil, nil
		case m := <-r.in:
			if old, ok := r.held[m.ID]; ok && old != m {
				// Delivered again (its timeout passed): the newest delivery is the one to answer.
				r.held[m.ID] = m
				continue
			}
			batch = append(batch, m)
			if len(batch) >= batchMax {
				return batch, nil
			}
			if !r.newer(m) {
				r.active = time.Now()
				idle.Reset(r.o.Idle)
			}
		case <-gap:
			return batch, nil
		case <-touch:
			r.touchHeld()
		case <-wait:
			if len(batch) > 0 {
				return batch, nil
			}
			return nil, nil
		}
	}
}

// newer reports an envelope dead-lettered after the run started (it does not keep the run going).
func (r *run) newer(m *nsq.Message) bool {
	var e struct {
		DeadLettered time.Time `json:"dead_lettered_at"`
	}
	return json.Unmarshal(m.Body, &e) == nil && e.DeadLettered.After(r.start)
}

func (r *run) touchHeld() {
	for _, m := range r.held {
		m.Touch()
	}
}

// item is an envelope being decided on.
type item struct {
	m      *nsq.Message
	env    bridge.Envelope
	body   []byte
	key    string
	reason string
	orig   string
}

func (r *run) keep(m *nsq.Message, reason string) {
	r.held[m.ID] = m
	r.kept[m.ID] = true
	r.sum.of(reason).Kept++
}

func (r *run) process(ctx context.Context, batch []*nsq.Message) error {
	var todo []*item
	for _, m := range batch {
		r.held[m.ID] = m
		it := &item{m: m}
		if err := json.Unmarshal(m.Body, &it.env); err != nil || !nsq.IsValidTopicName(it.env.Topic) || it.env.Reason == "" {
			r.keep(m, NotAnEnvelope)
			continue
		}
		it.reason = string(it.env.Reason)
		if !r.wanted(&it.env) || it.env.DeadLettered.After(r.start) {
			r.keep(m, it.reason)
			continue
		}
		if it.env.BodyTruncated {
			r.keep(m, it.reason)
			r.sum.of(it.reason).Truncated++
			continue
		}
		if it.env.Body != nil {
			it.body = []byte(*it.env.Body)
		} else {
			it.body = it.env.BodyBase64
		}
		it.orig = it.env.NSQDAddress + "/" + it.env.MessageID
		if r.done[it.orig] {
			r.sum.of(it.reason).Duplicate++
			r.fin(m)
			continue
		}
		if k := gjson.GetBytes(it.body, r.o.PartitionKey); k.Type == gjson.String || k.Type == gjson.Number {
			it.key = k.String()
			if k.Type == gjson.Number {
				it.key = k.Raw
			}
		}
		todo = append(todo, it)
	}
	// Two envelopes of one message in the same batch: handle the first only.
	var uniq []*item
	for _, it := range todo {
		if r.done[it.orig] {
			r.sum.of(it.reason).Duplicate++
			r.fin(it.m)
			continue
		}
		r.done[it.orig] = true
		uniq = append(uniq, it)
	}
	if len(uniq) == 0 {
		return nil
	}
	present := map[*item]bool{}
	var look []*item
	for _, it := range uniq {
		if mayBeWritten(it.env.Reason) {
			look = append(look, it)
		}
	}
	if r.o.SkipPresent && len(look) > 0 {
		var err error
		if present, err = r.lookup(ctx, look); err != nil {
			for _, it := range uniq {
				delete(r.done, it.orig)
			}
			return err
		}
	}
	byTopic := map[string][]*item{}
	var topics []string
	for _, it := range uniq {
		if present[it] {
			r.sum.of(it.reason).Present++
			r.fin(it.m)
			continue
		}
		t := it.env.Topic
		if r.o.ToTopic != "" {
			t = r.o.ToTopic
		}
		if byTopic[t] == nil {
			topics = append(topics, t)
		}
		byTopic[t] = append(byTopic[t], it)
	}
	for _, t := range topics {
		items := byTopic[t]
		for len(items) > 0 {
			n, size := 0, 0
			for n < len(items) && n < mpubCount && (n == 0 || size+len(items[n].body) <= mpubBytes) {
				size += len(items[n].body)
				n++
			}
			chunk := items[:n]
			items = items[n:]
			if !r.o.DryRun {
				bodies := make([][]byte, len(chunk))
				for i, it := range chunk {
					bodies[i] = it.body
				}
				// MultiPublish returns once nsqd has answered OK: only then is an envelope FINished.
				if err := r.p.MultiPublish(t, bodies); err != nil {
					for _, it := range append(chunk, items...) {
						delete(r.done, it.orig)
					}
					return fmt.Errorf("redrive: publish to %s: %w", t, err)
				}
			}
			for _, it := range chunk {
				r.sum.of(it.reason).Redriven++
				r.fin(it.m)
			}
		}
	}
	return nil
}

// mayBeWritten reports the reasons whose message the bridge may have written on an earlier
// delivery. Bad input (no usable key, not JSON, too large, ...) is dead-lettered instead of
// being written, so it is never looked for.
func mayBeWritten(r bridge.Reason) bool {
	return r == bridge.ReasonLate || r == bridge.ReasonMaxAttempts
}

// fin FINishes a message (in a dry run it is held and requeued at the end instead).
func (r *run) fin(m *nsq.Message) {
	if r.o.DryRun {
		return
	}
	m.Finish()
	delete(r.held, m.ID)
}

func (r *run) wanted(e *bridge.Envelope) bool {
	if len(r.o.Reasons) > 0 && !slices.Contains(r.o.Reasons, string(e.Reason)) {
		return false
	}
	if !r.o.Since.IsZero() && e.Timestamp.Before(r.o.Since) {
		return false
	}
	if !r.o.Until.IsZero() && !e.Timestamp.Before(r.o.Until) {
		return false
	}
	return true
}

// lookup reads the stream from the earliest envelope's timestamp minus Lookback, in the shards
// holding the envelopes' keys (every shard if one has no key), and reports the items whose body
// is there. Bodies are matched by content: in the bridge's default record layout a user record
// carries the message's own key, which the body determines; in the lane layout it does not.
func (r *run) lookup(ctx context.Context, items []*item) (map[*item]bool, error) {
	want := map[[32]byte][]*item{}
	lens := map[int]bool{}
	from := items[0].env.Timestamp
	var keys []string
	all := false
	for _, it := range items {
		h := sha256.Sum256(it.body)
		want[h] = append(want[h], it)
		lens[len(it.body)] = true
		if it.env.Timestamp.Before(from) {
			from = it.env.Timestamp
		}
		if it.key == "" {
			all = true
		} else {
			keys = append(keys, it.key)
		}
	}
	o := logread.Options{Stream: r.o.Stream, From: logread.AtTime(from.Add(-r.o.Lookback)), Warn: r.o.Warn}
	if !all {
		o.KeyShards = keys
	}
	lr, err := logread.New(r.o.Kinesis, o)
	if err != nil {
		return nil, err
	}
	// Held envelopes must not time out while the stream is read.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	held := make([]*nsq.Message, 0, len(r.held))
	for _, m := range r.held {
		held = append(held, m)
	}
	go func() {
		defer wg.Done()
		t := time.NewTicker(15 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				for _, m := range held {
					m.Touch()
				}
			}
		}
	}()
	found := map[*item]bool{}
	err = lr.Run(ctx, func(rec *logread.Record) error {
		if !lens[len(rec.Data)] {
			return nil
		}
		for _, it := range want[sha256.Sum256(rec.Data)] {
			found[it] = true
		}
		return nil
	})
	close(stop)
	wg.Wait()
	if err != nil {
		return nil, fmt.Errorf("redrive: look for the messages in %s: %w", r.o.Stream, err)
	}
	return found, nil
}

// warnLogger adapts go-nsq's logger to a warning function.
type warnLogger func(string)

func (w warnLogger) Output(_ int, s string) error {
	w(strings.TrimSpace(s))
	return nil
}
