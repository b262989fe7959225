package redrive_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/nsqio/go-nsq"

	"github.com/nsqk/nsqk/shared/bridge"
	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/kinesisfault"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/local/nsqlocal"
	"github.com/nsqk/nsqk/shared/redrive"
)

const (
	topic = "locations"
	dead  = "locations_dead"
	sink  = "sink"
)

type world struct {
	t      *testing.T
	n      *nsqlocal.NSQD
	kc     *kinesis.Client
	stream string
	p      *nsq.Producer
}

func newWorld(t *testing.T) *world {
	n := localtest.NSQD(t, nsqlocal.Options{})
	// The channels exist before anything is published: a channel only gets messages published
	// after it was created (or the topic's backlog, if it is the topic's first channel).
	n.GetTopic(topic).GetChannel(sink)
	n.GetTopic(dead).GetChannel(redrive.DefaultChannel)
	e := localtest.Kinesis(t, kinesislocal.Options{})
	kc := e.Client()
	p, err := nsq.NewProducer(n.TCPAddr, nsq.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	p.SetLogger(nil, nsq.LogLevelError)
	t.Cleanup(p.Stop)
	return &world{t: t, n: n, kc: kc, stream: localtest.Stream(t, kc, 2), p: p}
}

var msgSeq int

// deadLetter publishes an envelope for body and returns the body.
func (w *world) deadLetter(reason bridge.Reason, body string, mod func(*bridge.Envelope)) string {
	w.t.Helper()
	msgSeq++
	env := bridge.Envelope{Reason: reason, Detail: "test", Topic: topic, Channel: "nsqk", MessageID: fmt.Sprintf("%016d", msgSeq),
		Attempts: 2, Timestamp: time.Now().Add(-time.Minute).UTC(), DeadLettered: time.Now().UTC(), NSQDAddress: w.n.TCPAddr, Body: &body}
	if mod != nil {
		mod(&env)
	}
	b, _ := json.Marshal(env)
	if err := w.p.Publish(dead, b); err != nil {
		w.t.Fatal(err)
	}
	return body
}

// inStream writes bodies to the stream as the bridge does (one aggregate per key, user records
// with their own keys).
func (w *world) inStream(bodies ...string) {
	w.t.Helper()
	for _, b := range bodies {
		var m struct {
			UserID string `json:"user_id"`
		}
		json.Unmarshal([]byte(b), &m)
		a := kpl.NewAggregator(kpl.AggregatorConfig{OuterPartitionKey: "lane"})
		a.Add(m.UserID, "", []byte(b))
		a.Add(m.UserID, "", []byte(`{"user_id":"`+m.UserID+`","other":true}`))
		rec := a.Flush(nil)
		_, err := w.kc.PutRecord(context.Background(), &kinesis.PutRecordInput{StreamName: aws.String(w.stream),
			PartitionKey: aws.String(m.UserID), Data: rec.Data})
		if err != nil {
			w.t.Fatal(err)
		}
	}
}

// published drains the sink channel of the original topic.
func (w *world) published(want int) []string {
	w.t.Helper()
	var mu sync.Mutex
	var got []string
	c, err := nsq.NewConsumer(topic, sink, nsq.NewConfig())
	if err != nil {
		w.t.Fatal(err)
	}
	c.SetLogger(nil, nsq.LogLevelError)
	c.AddHandler(nsq.HandlerFunc(func(m *nsq.Message) error {
		mu.Lock()
		got = append(got, string(m.Body))
		mu.Unlock()
		return nil
	}))
	if err := c.ConnectToNSQD(w.n.TCPAddr); err != nil {
		w.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for w.n.Depth(topic, sink) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	c.Stop()
	<-c.StopChan
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(got)
	if len(got) != want {
		w.t.Errorf("published %d bodies, want %d: %q", len(got), want, got)
	}
	return got
}

func (w *world) deadLeft() (depth, inFlight, deferred int64) {
	for _, t := range w.n.GetStats(dead, redrive.DefaultChannel, false).Topics {
		for _, c := range t.Channels {
			return c.Depth, int64(c.InFlightCount), int64(c.DeferredCount)
		}
	}
	return 0, 0, 0
}

func (w *world) options() redrive.Options {
	return redrive.Options{NSQDTCPAddress: w.n.TCPAddr, Topic: dead, Stream: w.stream, Kinesis: w.kc,
		Idle: 500 * time.Millisecond, Warn: func(s string) { w.t.Log(s) }}
}

func body(user string, seq int) string { return fmt.Sprintf(`{"user_id":%q,"seq":%d}`, user, seq) }

func TestRedriveSkipPresentFiltersAndKeeps(t *testing.T) {
	w := newWorld(t)
	here1, here2 := body("u1", 1), body("u2", 1)
	w.inStream(here1, here2)
	missing1, missing2 := body("u1", 2), body("u3", 1)
	w.deadLetter(bridge.ReasonLate, here1, nil)
	w.deadLetter(bridge.ReasonLate, here2, nil)
	w.deadLetter(bridge.ReasonLate, missing1, nil)
	w.deadLetter(bridge.ReasonLate, missing2, func(e *bridge.Envelope) { e.MessageID = "dup-of-missing2" })
	w.deadLetter(bridge.ReasonLate, missing2, func(e *bridge.Envelope) { e.MessageID = "dup-of-missing2" })
	w.deadLetter(bridge.ReasonInvalidJSON, `{"user_id":"u4",`, nil)
	w.deadLetter(bridge.ReasonTooLarge, `{"user_id":"u5","big":"xx`, func(e *bridge.Envelope) {
		e.BodyTruncated, e.BodySize, e.BodySHA256 = true, 2000000, strings.Repeat("ab", 32)
	})
	if err := w.p.Publish(dead, []byte("not an envelope")); err != nil {
		t.Fatal(err)
	}

	// A dry run changes nothing.
	o := w.options()
	o.Reasons, o.SkipPresent, o.DryRun = []string{"late_redelivery"}, true, true
	s, err := redrive.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.ByReason["late_redelivery"]; c == nil || c.Redriven != 2 || c.Present != 2 || c.Duplicate != 1 {
		t.Errorf("dry run: %+v", c)
	}
	if d, f, _ := w.deadLeft(); d != 8 || f != 0 {
		t.Errorf("after the dry run: %d in the dead-letter channel, %d in flight; want 8, 0", d, f)
	}
	w.published(0)

	o.DryRun = false
	s, err = redrive.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.ByReason["late_redelivery"]; c == nil || *c != (redrive.Counts{Redriven: 2, Present: 2, Duplicate: 1}) {
		t.Errorf("late_redelivery: %+v", c)
	}
	for _, r := range []string{"invalid_json", "too_large", redrive.NotAnEnvelope} {
		if c := s.ByReason[r]; c == nil || c.Kept != 1 || c.Redriven != 0 {
			t.Errorf("%s: %+v", r, c)
		}
	}
	if got := w.published(2); !slices.Equal(got, []string{missing1, missing2}) {
		t.Errorf("redriven %q, want %q", got, []string{missing1, missing2})
	}
	if d, f, df := w.deadLeft(); d != 3 || f != 0 || df != 0 {
		t.Errorf("left in the dead-letter channel: %d ready, %d in flight, %d deferred; want the 3 kept, ready", d, f, df)
	}

	// Without filters: the invalid JSON body goes back; the truncated one never does.
	o = w.options()
	s, err = redrive.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.ByReason["too_large"]; c == nil || c.Kept != 1 || c.Truncated != 1 {
		t.Errorf("too_large: %+v", c)
	}
	if c := s.ByReason["invalid_json"]; c == nil || c.Redriven != 1 {
		t.Errorf("invalid_json: %+v", c)
	}
	w.published(1)
	if d, _, _ := w.deadLeft(); d != 2 {
		t.Errorf("%d left, want 2", d)
	}
}

func TestRedriveTimeWindowAndToTopic(t *testing.T) {
	w := newWorld(t)
	w.n.GetTopic("elsewhere").GetChannel(sink)
	old := time.Now().Add(-2 * time.Hour)
	w.deadLetter(bridge.ReasonLate, body("u1", 1), func(e *bridge.Envelope) { e.Timestamp = old })
	recent := w.deadLetter(bridge.ReasonLate, body("u1", 2), nil)
	// Dead-lettered after the redrive started (as its own redriven messages would be): left.
	w.deadLetter(bridge.ReasonLate, body("u1", 3), func(e *bridge.Envelope) { e.DeadLettered = time.Now().Add(time.Hour) })
	o := w.options()
	o.Since, o.ToTopic = time.Now().Add(-time.Hour), "elsewhere"
	s, err := redrive.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.ByReason["late_redelivery"]; c == nil || c.Redriven != 1 || c.Kept != 2 {
		t.Errorf("%+v", c)
	}
	if d := w.n.Depth("elsewhere", sink); d != 1 {
		t.Errorf("%d messages in the --to-topic, want 1", d)
	}
	_ = recent
	if d, _, _ := w.deadLeft(); d != 2 {
		t.Errorf("%d left, want the old one and the new one", d)
	}
}

// TestRedriveKeepsEverythingWhenPublishFails: nothing is FINished unless nsqd accepted its
// publish. nsqd goes away while redrive looks in the (slowed) stream; it comes back with the
// envelopes that were in flight, all of them.
func TestRedriveKeepsEverythingWhenPublishFails(t *testing.T) {
	dir := t.TempDir()
	n := localtest.NSQD(t, nsqlocal.Options{DataPath: dir})
	n.GetTopic(dead).GetChannel(redrive.DefaultChannel)
	e := localtest.Kinesis(t, kinesislocal.Options{})
	stream := localtest.Stream(t, e.Client(), 1)
	front, err := kinesisfault.Start(e.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	front.Set(kinesisfault.Faults{Operations: []string{"ListShards"}, Delay: 3 * time.Second})
	w := &world{t: t, n: n}
	p, err := nsq.NewProducer(n.TCPAddr, nsq.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	w.p = p
	for i := range 5 {
		w.deadLetter(bridge.ReasonLate, body("u1", i), nil)
	}
	p.Stop()
	o := redrive.Options{NSQDTCPAddress: n.TCPAddr, Topic: dead, Stream: stream, Kinesis: kinesislocal.NewClient(front.URL),
		SkipPresent: true, Idle: 500 * time.Millisecond}
	done := make(chan error, 1)
	go func() {
		_, err := redrive.Run(context.Background(), o)
		done <- err
	}()
	waitFor(t, "redrive looking in the stream for the 5 envelopes", func() bool {
		_, f, _ := w.deadLeft()
		return f == 5 && front.Stats().Delayed > 0
	})
	n.Stop()
	if err := <-done; err == nil {
		t.Fatal("no error from a failed publish")
	}
	n2 := localtest.NSQD(t, nsqlocal.Options{DataPath: dir, TCPAddress: n.TCPAddr, HTTPAddress: n.HTTPAddr})
	w.n = n2
	// The embedded nsqd does not load its metadata: a topic's and channel's disk queues are found
	// again when they are opened.
	n2.GetTopic(dead).GetChannel(redrive.DefaultChannel)
	if d, f, df := w.deadLeft(); d+f+df != 5 {
		t.Fatalf("after the restart: %d ready, %d in flight, %d deferred; want all 5", d, f, df)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
