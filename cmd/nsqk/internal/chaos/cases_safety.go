package chaos

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"time"
)

func safetyCases() []Case {
	return []Case{
		{
			Name: "nsqd-unreachable", Group: "process", Quick: true,
			Summary: "an in-process bridge reaches nsqd through a TCP gate with --unhealthy-after 10s (quick 3s); after a first batch is written the gate cuts the " +
				"connection and refuses new ones while a second batch is published (the channel backlog grows), then opens again",
			Rule: "/healthz stays 200 while connected, turns 503 no sooner than --unhealthy-after after the cut and 200 again after reconnecting; " +
				"nsqd_connections drops to 0 and seconds_since_last_message rises past --unhealthy-after while the backlog gauge shows the second batch; " +
				"lost=0, reordered=0, duplicated=0, nothing dead-lettered",
			Run: nsqdUnreachable,
		},
	}
}

// nsqdUnreachable takes nsqd away from a running bridge (as a broken route, security group or DNS
// entry would) and brings it back.
func nsqdUnreachable(ctx context.Context, t *T) error {
	r, err := t.NewRig(ctx, RigOptions{Shards: 2, MsgTimeout: 5 * time.Second, DiskOnly: true})
	if err != nil {
		return err
	}
	gate, err := startGate(r.NSQ.TCPAddr())
	if err != nil {
		return err
	}
	t.Cleanup(gate.Close)
	unhealthyAfter := t.Dur(10*time.Second, 3*time.Second)
	o := r.BridgeOptions()
	o.NSQDTCPAddresses = []string{gate.Addr} // the backlog poll still reaches nsqd's HTTP port
	o.MsgTimeout = 5 * time.Second
	o.UnhealthyAfter = unhealthyAfter
	b, err := r.StartReady(ctx, o)
	if err != nil {
		return err
	}
	h := b.B.Handler(b.Reg)
	healthz := func() int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		return rec.Code
	}
	gauge := func(name string) float64 { return b.Metrics().Value("nsqk_bridge_" + name) }

	pub, err := r.NewPublisher(500, 71)
	if err != nil {
		return err
	}
	n1, n2 := t.N(20000, 4000), t.N(20000, 4000)
	if err := pub.Publish(n1); err != nil {
		return err
	}
	if err := r.WaitDrained(ctx, 2*time.Minute); err != nil {
		return err
	}
	t.Event("first %d messages written", n1)
	t.Check("/healthz 200 while connected", healthz() == http.StatusOK, "status %d", healthz())
	t.Check("one nsqd connection reported while connected", gauge("nsqd_connections") == 1, "nsqd_connections %v", gauge("nsqd_connections"))

	cut := gate.Block()
	down := time.Now()
	t.Event("gate closed: %d connections cut, new ones refused", cut)
	if err := pub.Publish(n2); err != nil {
		return err
	}
	t.Event("published %d more while nsqd is unreachable", n2)
	if err := WaitFor(ctx, 30*time.Second, "nsqd_connections 0", func() bool { return gauge("nsqd_connections") == 0 }); err != nil {
		return err
	}
	if err := WaitFor(ctx, unhealthyAfter+time.Minute, "/healthz 503", func() bool { return healthz() == http.StatusServiceUnavailable }); err != nil {
		return err
	}
	after := time.Since(down)
	t.Metric("unhealthy_after_s", roundS(after))
	t.Check("/healthz turns 503 no sooner than --unhealthy-after", after >= unhealthyAfter, "503 after %s, --unhealthy-after %s", after, unhealthyAfter)
	if err := WaitFor(ctx, 30*time.Second, "the backlog gauge shows the second batch", func() bool { return gauge("nsq_backlog_messages") >= float64(n2) }); err != nil {
		return err
	}
	// The gauge is sampled every second: it passes --unhealthy-after within a second of /healthz.
	err = WaitFor(ctx, 10*time.Second, "seconds_since_last_message past --unhealthy-after", func() bool {
		return gauge("seconds_since_last_message") >= unhealthyAfter.Seconds()
	})
	t.Check("seconds_since_last_message rose past --unhealthy-after", err == nil, "%.1f s, --unhealthy-after %s", gauge("seconds_since_last_message"), unhealthyAfter)
	t.Metric("seconds_since_last_message", gauge("seconds_since_last_message"))
	t.Note("/readyz stays as it was while nsqd is unreachable (ready=%v): it reports start and shutdown only", b.B.Ready())

	gate.Open()
	t.Event("gate open again")
	if err := WaitFor(ctx, time.Minute, "/healthz 200 again", func() bool { return healthz() == http.StatusOK }); err != nil {
		return err
	}
	t.Event("healthy again after %s", time.Since(down).Round(100*time.Millisecond))
	end, err := r.EndInProc(ctx, b, 3*time.Minute)
	if err != nil {
		return err
	}
	t.Judge(end.A, Expect{})
	return nil
}

// gate forwards TCP connections to a target until blocked: then it cuts every open connection
// and closes new ones at once, as an unreachable peer would.
type gate struct {
	Addr    string
	target  string
	ln      net.Listener
	blocked atomic.Bool
	mu      sync.Mutex
	conns   map[net.Conn]bool
}

func startGate(target string) (*gate, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g := &gate{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]bool{}}
	go g.accept()
	return g, nil
}

func (g *gate) accept() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		if g.blocked.Load() {
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", g.target)
		if err != nil {
			c.Close()
			continue
		}
		g.mu.Lock()
		g.conns[c], g.conns[u] = true, true
		g.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			io.Copy(dst, src)
			dst.Close()
			src.Close()
			g.mu.Lock()
			delete(g.conns, dst)
			delete(g.conns, src)
			g.mu.Unlock()
		}
		go pipe(u, c)
		go pipe(c, u)
	}
}

// Block cuts every open connection and refuses new ones; it returns how many client connections
// it cut.
func (g *gate) Block() int {
	g.blocked.Store(true)
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.conns {
		c.Close()
	}
	n := len(g.conns) / 2
	clear(g.conns)
	return n
}

// Open lets connections through again.
func (g *gate) Open() { g.blocked.Store(false) }

func (g *gate) Close() {
	g.ln.Close()
	g.Block()
}
