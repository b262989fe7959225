package bridge

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/local/nsqlocal"
	"github.com/nsqk/nsqk/shared/location"
)

// syncBuffer collects log or EMF lines written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startLogged runs a bridge whose log lines (warn and above) go to logs as well as the test log.
func (h *harness) startLogged(o Options, logs io.Writer) *running {
	h.t.Helper()
	log := slog.New(slog.NewJSONHandler(io.MultiWriter(logs, testWriter{h.t}), &slog.HandlerOptions{Level: slog.LevelWarn}))
	b, err := New(o, h.kc, log, h.reg)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{b: b, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- b.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

func healthz(t *testing.T, h http.Handler) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	return rec.Code, rec.Body.String()
}

// nsqd goes away: the connection gauge drops to 0, the time since the last message keeps rising,
// /healthz turns unhealthy after --unhealthy-after (and not before), and healthy again once nsqd is
// back and the bridge reconnected. Nothing published is lost.
func TestHealthzTurnsUnhealthyWithoutNSQD(t *testing.T) {
	h := newHarness(t, 1)
	dir := t.TempDir()
	h.nsqd.Stop()
	start := func(tcp, http string) *nsqlocal.NSQD {
		n, err := nsqlocal.Start(nsqlocal.Options{DataPath: dir, TCPAddress: tcp, HTTPAddress: http, DiskOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	h.nsqd = start("", "")
	o := h.options()
	o.UnhealthyAfter = 3 * time.Second
	emf := &syncBuffer{}
	o.EMFOutput, o.EMFInterval = emf, 100*time.Millisecond
	gen := location.NewGenerator(5, 100)
	bodies := make([][]byte, 100)
	for i := range bodies {
		bodies[i], _, _ = gen.Next(nil)
	}
	h.publish(h.topic, bodies[:50])
	r := h.start(o)
	hh := r.b.Handler(h.reg)
	waitFor(t, 30*time.Second, "first 50 written", func() bool { return testutil.ToFloat64(r.b.m.messagesAcked) == 50 })
	waitFor(t, 10*time.Second, "one nsqd connection reported", func() bool { return testutil.ToFloat64(r.b.m.nsqdConns) == 1 })
	waitFor(t, 10*time.Second, "RDY reported", func() bool { return testutil.ToFloat64(r.b.m.rdy) > 0 })
	if code, body := healthz(t, hh); code != http.StatusOK {
		t.Fatalf("healthz %d %q while connected", code, body)
	}

	h.nsqd.Stop()
	down := time.Now()
	waitFor(t, 10*time.Second, "no nsqd connection reported", func() bool { return testutil.ToFloat64(r.b.m.nsqdConns) == 0 })
	waitFor(t, 30*time.Second, "healthz unhealthy", func() bool {
		code, _ := healthz(t, hh)
		return code == http.StatusServiceUnavailable
	})
	if d := time.Since(down); d < o.UnhealthyAfter {
		t.Fatalf("unhealthy %s after nsqd went away, before --unhealthy-after %s", d, o.UnhealthyAfter)
	}
	if _, body := healthz(t, hh); !strings.Contains(body, "no nsqd connection") {
		t.Fatalf("healthz body %q does not say why", body)
	}
	if got := testutil.ToFloat64(r.b.m.sinceLast); got < o.UnhealthyAfter.Seconds() {
		t.Fatalf("seconds since the last message %v, want at least %v", got, o.UnhealthyAfter.Seconds())
	}
	if !r.b.Ready() {
		t.Fatal("/readyz changed: it reports only start and shutdown")
	}
	waitFor(t, 5*time.Second, "EMF lines with the stall metrics", func() bool {
		s := emf.String()
		return strings.Contains(s, `"NSQDConnections":0`) && strings.Contains(s, `"SecondsSinceLastMessage"`) &&
			strings.Contains(s, `"BacklogPollFailures"`) && strings.Contains(s, `"NSQRdy"`)
	})

	n := start(h.nsqd.TCPAddr, h.nsqd.HTTPAddr)
	h.nsqd = n
	t.Cleanup(n.Stop)
	h.publish(h.topic, bodies[50:])
	waitFor(t, 60*time.Second, "healthy again and all 100 written", func() bool {
		code, _ := healthz(t, hh)
		return code == http.StatusOK && testutil.ToFloat64(r.b.m.messagesAcked) == 100
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if oc := checkStream(t, h, 100); oc.dups != 0 {
		t.Fatalf("%d duplicates", oc.dups)
	}
}

// A bridge that never reaches nsqd turns unhealthy too.
func TestHealthzUnhealthyWhenNSQDNeverReached(t *testing.T) {
	h := newHarness(t, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	o := h.options()
	o.NSQDTCPAddresses, o.NSQDHTTPAddresses = []string{dead}, []string{dead}
	o.UnhealthyAfter = 2 * time.Second
	logs := &syncBuffer{}
	r := h.startLogged(o, logs)
	hh := r.b.Handler(h.reg)
	waitFor(t, 30*time.Second, "healthz unhealthy", func() bool {
		code, _ := healthz(t, hh)
		return code == http.StatusServiceUnavailable
	})
	waitFor(t, 30*time.Second, "backlog poll failure logged at warn", func() bool {
		return strings.Contains(logs.String(), `"level":"WARN","msg":"nsq backlog poll failed`)
	})
	if testutil.ToFloat64(r.b.m.backlogFailures) == 0 {
		t.Fatal("backlog poll failures not counted")
	}
}

// --unhealthy-after 0 keeps /healthz healthy without nsqd (the old behaviour, for a platform that
// must not restart the bridge).
func TestUnhealthyAfterZeroNeverTurnsUnhealthy(t *testing.T) {
	b := &Bridge{o: Options{UnhealthyAfter: 0}, m: newMetrics(nil, nil)}
	b.noConnSince.Store(time.Now().Add(-time.Hour).UnixNano())
	if err := b.unhealthy(time.Now()); err != nil {
		t.Fatal(err)
	}
	b.o.UnhealthyAfter = time.Minute
	if err := b.unhealthy(time.Now()); err == nil {
		t.Fatal("an hour without nsqd is healthy with --unhealthy-after 1m")
	}
}

// Another consumer on the bridge's channel is seen in nsqd's stats: the gauge counts it and the
// bridge warns; when it leaves the gauge returns to 0.
func TestSecondClientOnTheChannelIsReported(t *testing.T) {
	h := newHarness(t, 1)
	o := h.options()
	logs := &syncBuffer{}
	publishLocations(h, 10, 2)
	r := h.startLogged(o, logs)
	waitFor(t, 30*time.Second, "first 10 written", func() bool { return testutil.ToFloat64(r.b.m.messagesAcked) == 10 })
	waitFor(t, 10*time.Second, "the bridge's own connection in the stats", func() bool { return testutil.ToFloat64(r.b.m.rdy) > 0 })
	if got := testutil.ToFloat64(r.b.m.otherClients); got != 0 {
		t.Fatalf("%v other clients reported with the bridge alone", got)
	}

	other, err := nsq.NewConsumer(o.Topic, o.Channel, nsq.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	other.SetLogger(nil, nsq.LogLevelError)
	other.AddHandler(nsq.HandlerFunc(func(*nsq.Message) error { return nil }))
	if err := other.ConnectToNSQD(h.nsqd.TCPAddr); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the other client counted", func() bool { return testutil.ToFloat64(r.b.m.otherClients) == 1 })
	waitFor(t, 5*time.Second, "a warning naming the shared channel", func() bool {
		return strings.Contains(logs.String(), `"level":"WARN","msg":"another client consumes this bridge's NSQ channel`)
	})
	other.Stop()
	<-other.StopChan
	waitFor(t, 30*time.Second, "the other client gone", func() bool { return testutil.ToFloat64(r.b.m.otherClients) == 0 })
}

// nsqd goes away right after the bridge connected (before the stall watch's next tick): the time
// without a connection counts from then, not from the bridge's start.
func TestHealthzCountsFromTheLastConnection(t *testing.T) {
	h := newHarness(t, 1)
	o := h.options()
	o.UnhealthyAfter = 3 * time.Second
	started := time.Now()
	r := h.start(o)
	hh := r.b.Handler(h.reg)
	waitFor(t, 30*time.Second, "ready", r.b.Ready)
	h.nsqd.Stop()
	down := time.Now()
	waitFor(t, 30*time.Second, "healthz unhealthy", func() bool {
		code, _ := healthz(t, hh)
		return code == http.StatusServiceUnavailable
	})
	if d := time.Since(down); d < o.UnhealthyAfter {
		t.Fatalf("unhealthy %s after nsqd went away (%s after start), before --unhealthy-after %s", d, down.Sub(started), o.UnhealthyAfter)
	}
}

// Through nsqlookupd, before anything was published no nsqd has the topic: there is nothing to
// connect to and a new bridge would find nothing either, so /healthz stays healthy (and the 404
// of nsqlookupd is no poll failure); once an nsqd has the topic the bridge connects to it.
func TestHealthzHealthyWhileNoNSQDHasTheTopic(t *testing.T) {
	lk := localtest.Lookupd(t)
	h := newHarness(t, 1)
	h.nsqd.Stop()
	o := h.options()
	o.NSQDTCPAddresses, o.NSQDHTTPAddresses = nil, nil
	o.LookupdHTTPAddresses = []string{lk.HTTPAddr}
	o.UnhealthyAfter = time.Second
	start := time.Now()
	r := h.start(o)
	hh := r.b.Handler(h.reg)
	waitFor(t, 30*time.Second, "three times --unhealthy-after with the topic nowhere", func() bool {
		return r.b.topicNowhere.Load() && time.Since(start) > 3*o.UnhealthyAfter
	})
	if code, body := healthz(t, hh); code != http.StatusOK {
		t.Fatalf("healthz %d %q while no nsqd has the topic", code, body)
	}
	if got := testutil.ToFloat64(r.b.m.backlogFailures); got != 0 {
		t.Fatalf("%v backlog poll failures: nsqlookupd's 404 for an unknown topic is no failure", got)
	}
	if got := testutil.ToFloat64(r.b.m.nsqdConns); got != 0 {
		t.Fatalf("%v nsqd connections reported with no nsqd", got)
	}

	n := localtest.NSQD(t, nsqlocal.Options{LookupdTCPAddresses: []string{lk.TCPAddr}, DiskOnly: true})
	h.nsqd = n
	publishLocations(h, 20, 2)
	waitFor(t, 60*time.Second, "the bridge found the nsqd and wrote everything", func() bool {
		return testutil.ToFloat64(r.b.m.messagesAcked) == 20 && testutil.ToFloat64(r.b.m.nsqdConns) == 1 && !r.b.topicNowhere.Load()
	})
}

// A partitioned bridge whose group owns none of the topic's nodes has no nsqd connection by
// design: /healthz stays healthy (a replacement would own none either) and it reads nothing.
func TestHealthzHealthyWhenThePartitionOwnsNoNode(t *testing.T) {
	lk := localtest.Lookupd(t)
	h := newHarness(t, 1)
	h.nsqd.Stop()
	h.nsqd = localtest.NSQD(t, nsqlocal.Options{LookupdTCPAddresses: []string{lk.TCPAddr}, DiskOnly: true})
	publishLocations(h, 20, 2)
	client := &http.Client{Timeout: 5 * time.Second}
	var listed []producer
	waitFor(t, 30*time.Second, "nsqlookupd lists the topic's node", func() bool {
		var err error
		listed, err = lookupTopic(context.Background(), client, httpURL(lk.HTTPAddr, "/lookup", url.Values{"topic": {h.topic}}))
		return err == nil && len(listed) == 1
	})
	p := Partition{Count: 2}
	p.Index = 1 - p.Owner(listed[0].tcpAddr())
	o := h.options()
	o.NSQDTCPAddresses, o.NSQDHTTPAddresses = nil, nil
	o.LookupdHTTPAddresses = []string{lk.HTTPAddr}
	o.NSQDPartition = p
	o.UnhealthyAfter = time.Second
	start := time.Now()
	r := h.start(o)
	waitFor(t, 30*time.Second, "three times --unhealthy-after with no owned node", func() bool {
		return r.b.topicNowhere.Load() && time.Since(start) > 3*o.UnhealthyAfter
	})
	if code, body := healthz(t, r.b.Handler(h.reg)); code != http.StatusOK {
		t.Fatalf("healthz %d %q for a partition that owns no node", code, body)
	}
	if c, acked := testutil.ToFloat64(r.b.m.nsqdConns), testutil.ToFloat64(r.b.m.messagesAcked); c != 0 || acked != 0 {
		t.Fatalf("%v connections, %v messages acked: the node belongs to the other group", c, acked)
	}
}
