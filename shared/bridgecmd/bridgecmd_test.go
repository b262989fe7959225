package bridgecmd

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"

	"github.com/nsqk/nsqk/shared/local/emfread"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/local/nsqlocal"
	"github.com/nsqk/nsqk/shared/location"
)

func TestUsageErrorsExitTwo(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"--topic", "t"}, &out, &errb); code != 2 {
		t.Fatalf("exit %d, want 2; stderr: %s", code, errb.String())
	}
	for _, want := range []string{"--stream is required", "--nsqd-tcp-address or --lookupd-http-address"} {
		if !strings.Contains(errb.String(), want) {
			t.Fatalf("stderr lacks %q: %s", want, errb.String())
		}
	}
	errb.Reset()
	if code := Main(context.Background(), []string{"--no-such-flag"}, &out, &errb); code != 2 {
		t.Fatalf("unknown flag: exit %d", code)
	}
}

// The program configured only from the environment (as in ECS): it drains the topic into the
// stream, serves /metrics and /readyz, writes EMF to stdout, and exits 0 on cancellation (SIGTERM)
// with every message FINished.
func TestMainFromEnvironmentDrainsAndExitsCleanly(t *testing.T) {
	ctx := context.Background()
	em := localtest.Kinesis(t, kinesislocal.Options{})
	if err := kinesislocal.CreateStream(ctx, em.Client(), "env-stream", 2); err != nil {
		t.Fatal(err)
	}
	n := localtest.NSQD(t, nsqlocal.Options{})
	gen := location.NewGenerator(10, 1)
	p, _ := nsq.NewProducer(n.TCPAddr, nsq.NewConfig())
	p.SetLogger(nil, nsq.LogLevelError)
	for i := 0; i < 300; i++ {
		b, _, _ := gen.Next(nil)
		if err := p.Publish("env-topic", b); err != nil {
			t.Fatal(err)
		}
	}
	p.Stop()
	port, _ := kinesislocal.FreePort()
	metrics := fmt.Sprintf("127.0.0.1:%d", port)
	for k, v := range map[string]string{
		"NSQK_NSQD_TCP_ADDRESS": n.TCPAddr, "NSQK_TOPIC": "env-topic", "NSQK_STREAM": "env-stream",
		"NSQK_MAX_BUFFERED_TIME": "10ms", "NSQK_METRICS_ADDRESS": metrics, "NSQK_CLOUDWATCH_EMF": "true",
		"NSQK_EMF_INTERVAL": "50ms", "NSQK_LOG_LEVEL": "warn",
		"AWS_ENDPOINT_URL_KINESIS": em.Endpoint, "AWS_REGION": "us-east-1",
		"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_EC2_METADATA_DISABLED": "true",
	} {
		t.Setenv(k, v)
	}
	rctx, cancel := context.WithCancel(ctx)
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- Main(rctx, nil, &stdout, &stderr) }()

	waitFor(t, "300 messages acknowledged", func() bool {
		return strings.Contains(get(t, metrics, "/metrics"), `nsqk_bridge_messages_acked_total{route="env-topic"} 300`)
	})
	if body := get(t, metrics, "/readyz"); body != "ready\n" {
		t.Fatalf("/readyz = %q", body)
	}
	if code := healthcheck(metrics, &bytes.Buffer{}); code != 0 {
		t.Fatalf("--healthcheck against a healthy bridge exited %d", code)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d after cancellation; stderr:\n%s", code, stderr.String())
	}
	if d := n.Depth("env-topic", "nsqk"); d != 0 {
		t.Fatalf("%d messages left in NSQ", d)
	}
	var acked float64
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		d, err := emfread.Decode([]byte(line))
		if err != nil {
			t.Fatalf("stdout line is not EMF: %v\n%s", err, line)
		}
		if d.Namespace != "NSQK/Bridge" || d.Dimensions["Stream"] != "env-stream" {
			t.Fatalf("EMF document with namespace %q dimensions %v", d.Namespace, d.Dimensions)
		}
		if v, ok := d.Metrics["MessagesAcked"]; ok {
			acked += v.Total()
		}
	}
	if acked != 300 {
		t.Fatalf("EMF MessagesAcked sums to %v, want 300", acked)
	}
	if code := healthcheck(metrics, &bytes.Buffer{}); code == 0 {
		t.Fatal("--healthcheck passed with no bridge running")
	}
}

// get returns the body of an HTTP GET, or "" while the server is not up yet.
func get(t *testing.T, addr, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return b.String()
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of the program under test.
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

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}
