package nsqlocal_test

// The go-nsq client the product builds with (third_party/go-nsq, patched) against the embedded
// nsqd: the behaviour the patch must keep from upstream.

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"
	"github.com/nsqio/nsq/nsqd"

	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/local/nsqlocal"
)

// logLines collects go-nsq's log output.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Output(_ int, s string) error {
	l.mu.Lock()
	l.lines = append(l.lines, s)
	l.mu.Unlock()
	return nil
}

func (l *logLines) contains(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func publish(t *testing.T, n *nsqlocal.NSQD, topic string, count int) {
	t.Helper()
	p, err := nsq.NewProducer(n.TCPAddr, nsq.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	p.SetLoggerLevel(nsq.LogLevelError)
	bodies := make([][]byte, count)
	for i := range bodies {
		bodies[i] = fmt.Appendf(nil, "m%03d", i)
	}
	if err := p.MultiPublish(topic, bodies); err != nil {
		t.Fatal(err)
	}
}

// clientStats returns, as nsqd counts them, the FINs received from topic/channel's connected
// clients and the RDY each holds.
func clientStats(n *nsqlocal.NSQD, topic, channel string) (finished uint64, rdy []int64) {
	for _, ts := range n.GetStats(topic, channel, true).Topics {
		for _, cs := range ts.Channels {
			for _, c := range cs.Clients {
				if v2, ok := c.(nsqd.ClientV2Stats); ok {
					finished += v2.FinishCount
					rdy = append(rdy, v2.ReadyCount)
				}
			}
		}
	}
	return finished, rdy
}

// stopConsumer stops c and fails the test if it does not stop: a deadlocked connection never does.
func stopConsumer(t *testing.T, c *nsq.Consumer) {
	go c.Stop() // Stop writes CLS on each connection: it blocks on a stuck one
	select {
	case <-c.StopChan:
	case <-time.After(20 * time.Second):
		t.Error("consumer did not stop within 20s (a connection is stuck)")
	}
}

// A handler that returns errors, with go-nsq's default backoff settings: the consumer backs off
// (RDY 0), resumes (RDY 1), leaves backoff once a message succeeds (RDY back to max-in-flight), and
// every message is FINished at nsqd. The write loop runs the delegates that do this, and they
// write RDY on its own connection and on the consumer's others.
func TestConsumerBackoffResumesAfterHandlerErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		auto  bool // go-nsq answers from the handler's return value; else the handler calls Requeue/Finish
		nsqds int
	}{{"auto-response", true, 1}, {"explicit-requeue", false, 1}, {"two-nsqd", true, 2}} {
		t.Run(tc.name, func(t *testing.T) {
			const topic, channel, perNSQD, maxInFlight, failures = "backoff", "c", 60, 8, 3
			// Every nsqd keeps messages waiting until the end, so go-nsq's resume (RDY 1 on a
			// randomly chosen connection) always finds one.
			var ns []*nsqlocal.NSQD
			for range tc.nsqds {
				n := localtest.NSQD(t, nsqlocal.Options{})
				publish(t, n, topic, perNSQD)
				ns = append(ns, n)
			}
			total, perConnRDY := uint64(perNSQD*tc.nsqds), int64(maxInFlight/tc.nsqds)

			cfg := nsq.NewConfig()
			cfg.MaxInFlight = maxInFlight
			// Redeliver a requeued message at once; the backoff settings stay go-nsq's defaults
			// (exponential, 1 s multiplier, 2 m cap).
			cfg.DefaultRequeueDelay = 0
			c, err := nsq.NewConsumer(topic, channel, cfg)
			if err != nil {
				t.Fatal(err)
			}
			logs := &logLines{}
			c.SetLogger(logs, nsq.LogLevelWarning)

			var mu sync.Mutex
			failed, done := 0, map[string]bool{}
			c.AddConcurrentHandlers(nsq.HandlerFunc(func(m *nsq.Message) error {
				if !tc.auto {
					m.DisableAutoResponse()
				}
				mu.Lock()
				fail := m.Attempts == 1 && failed < failures
				nth := failed + 1
				if fail {
					failed = nth
				} else {
					done[string(m.Body)] = true
				}
				mu.Unlock()
				switch {
				case fail && tc.auto:
					return fmt.Errorf("handler error %d", nth)
				case fail:
					m.Requeue(0) // with backoff
				case !tc.auto:
					m.Finish()
				}
				return nil
			}), 4)
			for _, n := range ns {
				if err := c.ConnectToNSQD(n.TCPAddr); err != nil {
					t.Fatal(err)
				}
			}
			defer stopConsumer(t, c)

			deadline := time.Now().Add(60 * time.Second)
			for {
				var finished uint64
				var depth int64
				var rdy []int64
				for _, n := range ns {
					f, r := clientStats(n, topic, channel)
					finished, depth, rdy = finished+f, depth+n.Depth(topic, channel), append(rdy, r...)
				}
				if finished == total && depth == 0 && len(rdy) == tc.nsqds && !slices.ContainsFunc(rdy, func(r int64) bool { return r != perConnRDY }) {
					break
				}
				if time.Now().After(deadline) {
					mu.Lock()
					handled := len(done)
					mu.Unlock()
					t.Fatalf("after 60s: nsqd counts %d of %d FINished, depth %d, client RDY %v (want %d each); handler saw %d distinct successes, consumer stats %+v",
						finished, total, depth, rdy, perConnRDY, handled, *c.Stats())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if st := c.Stats(); st.MessagesRequeued != failures || st.MessagesFinished != total {
				t.Errorf("consumer stats %+v, want %d requeued and %d finished", *st, failures, total)
			}
			for _, want := range []string{"backing off for", "backoff timeout expired, sending RDY 1", fmt.Sprintf("exiting backoff, returning all to RDY %d", perConnRDY)} {
				if !logs.contains(want) {
					t.Errorf("go-nsq never logged %q", want)
				}
			}
		})
	}
}
