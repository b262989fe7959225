package bridgecmd

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/nsqio/go-nsq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nsqk/nsqk/shared/bridge"
	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/emfread"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/local/nsqlocal"
)

type routedMsg struct {
	Topic string `json:"topic"`
	User  string `json:"user,omitempty"`
	Sess  *struct {
		ID string `json:"id"`
	} `json:"sess,omitempty"`
	Seq int `json:"seq"`
}

// Three routes in one process: each topic's messages reach its own stream exactly once, in
// order per key; each route's bad messages go to its own dead-letter topic; the metrics carry
// the route label and the EMF documents the Route dimension.
func TestThreeRoutesInOneProcess(t *testing.T) {
	ctx := context.Background()
	em := localtest.Kinesis(t, kinesislocal.Options{})
	for _, s := range []string{"r-orders", "r-clicks"} {
		if err := kinesislocal.CreateStream(ctx, em.Client(), s, 2); err != nil {
			t.Fatal(err)
		}
	}
	n := localtest.NSQD(t, nsqlocal.Options{DiskOnly: true})
	// orders and payments share a stream (same key path); clicks has its own key path, relaxed
	// ordering and lane keys.
	routes := map[string]struct{ stream, dead string }{
		"orders":   {"r-orders", "orders_dead"},
		"payments": {"r-orders", "payments_bad"},
		"clicks":   {"r-clicks", "clicks_dead"},
	}
	config := writeConfig(t, fmt.Sprintf(`
nsqd-tcp-address: %s
partition-key: user
max-buffered-time: 10ms
log-level: warn
routes:
  - topic: orders
    stream: r-orders
  - topic: payments
    stream: r-orders
    dead-letter-topic: payments_bad
    key-buckets: 2
  - topic: clicks
    stream: r-clicks
    partition-key: sess.id
    ordering: relaxed
    record-keys: lane
    max-buffered-time: 30ms
`, n.TCPAddr))

	const perRoute, badPerRoute, keys = 400, 5, 7
	p, _ := nsq.NewProducer(n.TCPAddr, nsq.NewConfig())
	p.SetLogger(nil, nsq.LogLevelError)
	for topic := range routes {
		var bodies [][]byte
		for i := range perRoute {
			m := routedMsg{Topic: topic, Seq: i}
			k := fmt.Sprintf("k%d", i%keys)
			if topic == "clicks" {
				m.Sess = &struct {
					ID string `json:"id"`
				}{k}
			} else {
				m.User = k
			}
			b, _ := json.Marshal(m)
			bodies = append(bodies, b)
		}
		for i := range badPerRoute {
			bodies = append(bodies, []byte(fmt.Sprintf(`{"topic":%q,"bad":%d}`, topic, i)))
		}
		if err := p.MultiPublish(topic, bodies); err != nil {
			t.Fatal(err)
		}
	}
	p.Stop()

	port, _ := kinesislocal.FreePort()
	metrics := fmt.Sprintf("127.0.0.1:%d", port)
	for k, v := range map[string]string{
		"NSQK_CONFIG": config, "NSQK_METRICS_ADDRESS": metrics, "NSQK_CLOUDWATCH_EMF": "true", "NSQK_EMF_INTERVAL": "50ms",
		"AWS_ENDPOINT_URL_KINESIS": em.Endpoint, "AWS_REGION": "us-east-1",
		"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_EC2_METADATA_DISABLED": "true",
	} {
		t.Setenv(k, v)
	}
	rctx, cancel := context.WithCancel(ctx)
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- Main(rctx, nil, &stdout, &stderr) }()

	waitFor(t, "every route's messages acknowledged and dead-lettered", func() bool {
		m := get(t, metrics, "/metrics")
		for topic := range routes {
			if !strings.Contains(m, fmt.Sprintf(`nsqk_bridge_messages_acked_total{route=%q} %d`, topic, perRoute)) ||
				!strings.Contains(m, fmt.Sprintf(`nsqk_bridge_dead_lettered_total{reason="missing_key",route=%q} %d`, topic, badPerRoute)) {
				return false
			}
		}
		return true
	})
	if body := get(t, metrics, "/healthz"); body != "ok\n" {
		t.Fatalf("/healthz = %q", body)
	}
	if body := get(t, metrics, "/readyz"); body != "ready\n" {
		t.Fatalf("/readyz = %q", body)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d after cancellation; stderr:\n%s", code, stderr.String())
	}

	// Exactly once, in the right stream, in order per key within each shard.
	seen := map[string]map[int]int{}
	for _, stream := range []string{"r-orders", "r-clicks"} {
		recs, err := kinesislocal.ReadAll(ctx, em.Client(), stream)
		if err != nil {
			t.Fatal(err)
		}
		last := map[string]int{} // topic/key -> last seq
		var d kpl.Deaggregator
		for _, r := range recs {
			urs, _, err := d.Deaggregate(nil, r.Data)
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range urs {
				var m routedMsg
				if err := json.Unmarshal(u.Data, &m); err != nil {
					t.Fatalf("record in %s: %v", stream, err)
				}
				if routes[m.Topic].stream != stream {
					t.Fatalf("a %s message in stream %s", m.Topic, stream)
				}
				if seen[m.Topic] == nil {
					seen[m.Topic] = map[int]int{}
				}
				seen[m.Topic][m.Seq]++
				key := m.User
				if m.Sess != nil {
					key = m.Sess.ID
				}
				if m.Topic != "clicks" { // relaxed ordering promises no order
					id := m.Topic + "/" + key
					if s, ok := last[id]; ok && m.Seq < s {
						t.Fatalf("%s: seq %d after %d", id, m.Seq, s)
					}
					last[id] = m.Seq
				}
			}
		}
	}
	for topic := range routes {
		for i := range perRoute {
			if c := seen[topic][i]; c != 1 {
				t.Fatalf("%s seq %d written %d times", topic, i, c)
			}
		}
		if d := n.Depth(topic, "nsqk"); d != 0 {
			t.Fatalf("%d messages left in %s", d, topic)
		}
	}

	// Each route's dead letters on its own topic, and only its own.
	for topic, r := range routes {
		if d := n.GetTopic(r.dead).Depth(); d != badPerRoute {
			t.Fatalf("%s holds %d dead letters, want %d", r.dead, d, badPerRoute)
		}
		for _, e := range readEnvelopes(t, n.TCPAddr, r.dead, badPerRoute) {
			if e.Topic != topic || e.Reason != bridge.ReasonMissingKey || !strings.Contains(*e.Body, fmt.Sprintf(`"topic":%q`, topic)) {
				t.Fatalf("dead letter on %s: %+v", r.dead, e)
			}
		}
	}

	// EMF: every document names its stream and route.
	acked := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		d, err := emfread.Decode([]byte(line))
		if err != nil {
			t.Fatalf("stdout line is not EMF: %v\n%s", err, line)
		}
		route := d.Dimensions["Route"]
		if _, ok := routes[route]; !ok || d.Dimensions["Stream"] != routes[route].stream {
			t.Fatalf("EMF document with dimensions %v", d.Dimensions)
		}
		if v, ok := d.Metrics["MessagesAcked"]; ok {
			acked[route] += v.Total()
		}
	}
	for topic := range routes {
		if acked[topic] != perRoute {
			t.Fatalf("EMF MessagesAcked of %s sums to %v, want %d", topic, acked[topic], perRoute)
		}
	}
}

// readEnvelopes consumes want dead-letter envelopes from topic.
func readEnvelopes(t *testing.T, addr, topic string, want int) []bridge.Envelope {
	t.Helper()
	var mu sync.Mutex
	var envs []bridge.Envelope
	c, err := nsq.NewConsumer(topic, "check", nsq.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	c.SetLogger(nil, nsq.LogLevelError)
	c.AddHandler(nsq.HandlerFunc(func(m *nsq.Message) error {
		var e bridge.Envelope
		if err := json.Unmarshal(m.Body, &e); err != nil {
			t.Errorf("not an envelope: %s", m.Body)
		}
		mu.Lock()
		envs = append(envs, e)
		mu.Unlock()
		return nil
	}))
	if err := c.ConnectToNSQD(addr); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	waitFor(t, fmt.Sprintf("%d envelopes on %s", want, topic), func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(envs) >= want
	})
	mu.Lock()
	defer mu.Unlock()
	return append([]bridge.Envelope(nil), envs...)
}

// /readyz is ready only when every route is, and says which are not; /metrics carries each
// route's series under its label.
func TestGroupEndpointsCoverEveryRoute(t *testing.T) {
	o := bridge.NewOptions()
	o.NSQDTCPAddresses = []string{"127.0.0.1:1"}
	routes, err := buildRoutes(o, []RouteConfig{{Topic: "a", Stream: "s1"}, {Topic: "b", Stream: "s2"}})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	g, err := newGroup(routes, nil, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.handler(reg))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	if body := get(t, addr, "/healthz"); body != "ok\n" {
		t.Fatalf("/healthz = %q", body)
	}
	if body := get(t, addr, "/readyz"); body != "route a: not ready\nroute b: not ready\n" {
		t.Fatalf("/readyz = %q", body)
	}
	m := get(t, addr, "/metrics")
	for _, want := range []string{`nsqk_bridge_messages_in_total{route="a"} 0`, `nsqk_bridge_messages_in_total{route="b"} 0`} {
		if !strings.Contains(m, want) {
			t.Fatalf("/metrics lacks %s", want)
		}
	}
}

// A route that cannot run (its stream does not exist) stops the whole process with exit 1 and
// an error that names it; the other route shuts down cleanly.
func TestFailingRouteStopsTheProcess(t *testing.T) {
	em := localtest.Kinesis(t, kinesislocal.Options{})
	if err := kinesislocal.CreateStream(context.Background(), em.Client(), "exists", 1); err != nil {
		t.Fatal(err)
	}
	n := localtest.NSQD(t, nsqlocal.Options{})
	config := writeConfig(t, fmt.Sprintf(`
nsqd-tcp-address: %s
metrics-address: ""
routes:
  - {topic: good, stream: exists}
  - {topic: lost, stream: no-such-stream}
`, n.TCPAddr))
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL_KINESIS": em.Endpoint, "AWS_REGION": "us-east-1",
		"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_EC2_METADATA_DISABLED": "true",
	} {
		t.Setenv(k, v)
	}
	var stdout, stderr syncBuffer
	if code := Main(context.Background(), []string{"--config", config}, &stdout, &stderr); code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), `route \"lost\": bridge: stream no-such-stream`) {
		t.Fatalf("stderr does not name the failing route:\n%s", stderr.String())
	}
}
