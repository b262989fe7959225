package chaos

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/nsqio/go-nsq"

	"github.com/nsqk/nsqk/cmd/nsqk/internal/nullsink"
	"github.com/nsqk/nsqk/shared/bridge"
	"github.com/nsqk/nsqk/shared/bridgecmd"
	"github.com/nsqk/nsqk/shared/local/kinesisfault"
	"github.com/nsqk/nsqk/shared/location"
	"github.com/nsqk/nsqk/shared/shardmap"
)

// Environment of the memory-distinct-keys case: the number of distinct keys (the suite's default
// is smaller than the 5M a by-hand run uses) and the budget of each of the bridge's two memories.
const (
	DistinctKeysEnv = "NSQK_CHAOS_DISTINCT_KEYS"
	MemoryBudgetEnv = "NSQK_CHAOS_MEMORY_MIB"
	MemoryWindowEnv = "NSQK_CHAOS_MEMORY_WINDOW"
)

func datapathCases() []Case {
	return []Case{
		{
			Name: "backlog-late-window-sigkill", Group: "datapath", Quick: true,
			Summary: "a backlog older than --late-window (4 s, above the 2 s message timeout) is caught up slowly (--max-in-flight 200, every PutRecords 250 ms) by the bridge program; " +
				"SIGKILL mid-way, restarted at once (nsqd msg timeout 2 s, --mem-queue-size=0): the killed bridge's messages come back behind newer ones of their keys",
			Rule: "strict mode: lost=0, reordered=0; duplicated <= messages nsqd redelivered; good messages dead-lettered only as late_redelivery, " +
				"each a redelivery (attempts >= 2); the restarted bridge recognised late redeliveries although every key's publish time is older than --late-window; final SIGTERM exits 0",
			Run: backlogLateWindowSIGKILL,
		},
		{
			Name: "reshard-hot-key", Group: "reshard",
			Summary: "kinesis-mock, 2 shards: a split of shard 0 while a hot key of its upper half takes 100 msg/s on top of 120 msg/s over 200 users, " +
				"every ListShards of the bridge taking 1 s (as when it is throttled: the hot key keeps arriving while the refreshed map is on its way); " +
				"the consumer starts after everything was written and reads the children in parallel (the heir's first invocation takes 1 s)",
			Rule: ruleReshard,
			Run: func(ctx context.Context, t *T) error {
				return reshard(ctx, t, reshardPlan{ops: []string{"split"}, lateConsumer: true, hotRate: 100, listShards: time.Second})
			},
		},
		{
			Name: "nsq-connection-drop", Group: "process", Quick: true,
			Summary: "5,000 msg/s over 1,000 users into an in-process bridge whose nsqd connection (through a TCP proxy) is cut mid-run; " +
				"nsqd redelivers the messages that were in flight on it after their timeout (5 s), behind newer ones; the bridge reconnects by itself",
			Rule: "lost=0, reordered=0, duplicated=0: a redelivery of a message the bridge wrote is FINished, not written again; " +
				"no message in the stream is also dead-lettered; good messages dead-lettered only as late_redelivery (messages lost on the cut connection before the bridge read them)",
			Run: nsqConnectionDrop,
		},
		{
			Name: "memory-distinct-keys", Group: "memory",
			Summary: "the bridge program writes messages with distinct keys (default 2,000,000, quick 400,000; " + DistinctKeysEnv + " overrides, e.g. 5000000), published as fast as nsqd takes them, to a null Kinesis sink " +
				"with --late-window and --written-window 10s (" + MemoryWindowEnv + " overrides; --msg-timeout the same, at most 1m) and --late-window-memory-mib and --written-memory-mib 8 (" + MemoryBudgetEnv + " overrides), so that both memories reach their budgets; " +
				"VmRSS sampled every second",
			Rule: "every message written once (sink count = published, nothing dead-lettered); RSS peak <= RSS before the flood + both budgets + the program's 256 MiB working allowance; " +
				"the budgets evicted keys early and counted them; no housekeeping pass held the bridge's lock over 10 ms; SIGTERM exits 0",
			Run: memoryDistinctKeys,
		},
	}
}

// backlogLateWindowSIGKILL catches up a backlog whose every message is older than --late-window,
// kills the bridge mid-way and restarts it. The redeliveries of what the killed bridge held come
// back after the message timeout, behind newer messages of their keys, which the new bridge
// accepted moments before: it must still know those keys.
func backlogLateWindowSIGKILL(ctx context.Context, t *T) error {
	// The window must outlast the message timeout, as in production (a key is remembered for the
	// window after its last message; a redelivery comes back one timeout after the kill): with a
	// window shorter than the timeout, a key whose last message the new bridge took right after the
	// kill could be forgotten before its redelivery arrives.
	const lateWindow, msgTimeout = 4 * time.Second, 2 * time.Second
	r, err := t.NewRig(ctx, RigOptions{Shards: 2, MsgTimeout: msgTimeout, DiskOnly: true})
	if err != nil {
		return err
	}
	pub, err := r.NewPublisher(200, 59)
	if err != nil {
		return err
	}
	n := t.N(16000, 8000)
	if err := pub.Publish(n); err != nil {
		return err
	}
	t.Event("published a backlog of %d messages over 200 users", n)
	if err := hold(ctx, lateWindow+time.Second); err != nil { // the whole backlog is now older than the window
		return err
	}
	// Slow Kinesis so that catching up takes well beyond the message timeout.
	r.Front.Set(kinesisfault.Faults{Delay: 250 * time.Millisecond})
	args := []string{"--msg-timeout", msgTimeout.String(), "--late-window", lateWindow.String(), "--max-in-flight", "200"}
	c1, err := r.StartChild(ctx, "bridge-1", args...)
	if err != nil {
		return err
	}
	if err := hold(ctx, 2*time.Second); err != nil { // several housekeeping passes (every 375 ms)
		return err
	}
	before, _ := r.NSQ.Channel(r.Topic, r.Channel)
	c1.Signal(syscall.SIGKILL)
	code1, err := c1.Wait(time.Minute)
	if err != nil {
		return err
	}
	t.Event("SIGKILL to bridge-1 (nsqd: %d in flight, %d still queued); exit code %d", before.InFlightCount, before.Depth, code1)
	t.Metric("in_flight_at_kill", before.InFlightCount)
	c2, err := r.StartChild(ctx, "bridge-2", args...)
	if err != nil {
		return err
	}
	end, err := r.EndChild(ctx, c2, 3*time.Minute)
	if err != nil {
		return err
	}
	a, obs := end.A, end.Obs
	st, _ := r.NSQ.Channel(r.Topic, r.Channel)
	redelivered := int(st.TimeoutCount + st.RequeueCount)
	t.Event("nsqd redelivered %d messages (%d timed out, %d requeued)", redelivered, st.TimeoutCount, st.RequeueCount)
	t.Metric("nsqd_redelivered", redelivered)
	nLate, firstDelivery := noteLate(t, obs.DeadLetters)
	t.Judge(a, Expect{MaxDup: max(redelivered, 0), DupWhy: "messages nsqd redelivered after the kill", GoodDL: []bridge.Reason{bridge.ReasonLate}})
	t.Check("late dead letters were redeliveries", firstDelivery == 0, "%d of %d late_redelivery dead letters had attempts 1", firstDelivery, nLate)
	t.Check("late redeliveries recognised", nLate > 0,
		"%d late_redelivery dead letters for %d redeliveries: keys accepted moments before must be remembered although published long before", nLate, redelivered)
	if redelivered == 0 {
		t.Check("messages were redelivered", false, "nsqd redelivered nothing: the kill did not hit messages in flight")
	}
	t.checkNoRace(c1, c2)
	return nil
}

// hotKeyPrefix returns a user-id prefix that makes user 0 of a publisher a key in the upper half
// of the first of two shards: the half a split of that shard gives to the child that does not
// inherit the parent's start key (where a lane's aggregate in flight at the split lands).
func hotKeyPrefix() (byte, error) {
	for c := byte('a'); c <= 'z'; c++ {
		h := shardmap.HashKey(string(c) + location.UserID(0)[1:])
		if h[0] >= 0x40 && h[0] < 0x80 {
			return c, nil
		}
	}
	return 0, fmt.Errorf("no user-id prefix puts a key in the upper half of shard 0")
}

// startHotKey publishes one key at rate messages per second for d, alongside a case's publisher.
func startHotKey(ctx context.Context, t *T, r *Rig, rate int, d time.Duration) (<-chan error, error) {
	c, err := hotKeyPrefix()
	if err != nil {
		return nil, err
	}
	hot, err := r.NewPublisher(1, 61)
	if err != nil {
		return nil, err
	}
	hot.WithPrefix(c)
	t.Event("hot key %s at %d msg/s", string(c)+location.UserID(0)[1:], rate)
	return hot.Go(ctx, rate, d), nil
}

// nsqConnectionDrop cuts the bridge's nsqd connection at 5k msg/s.
func nsqConnectionDrop(ctx context.Context, t *T) error {
	r, err := t.NewRig(ctx, RigOptions{Shards: 2, MsgTimeout: 5 * time.Second, DiskOnly: true})
	if err != nil {
		return err
	}
	px, err := startTCPProxy(r.NSQ.TCPAddr())
	if err != nil {
		return err
	}
	t.Cleanup(px.Close)
	o := r.BridgeOptions()
	o.NSQDTCPAddresses = []string{px.Addr}
	o.MsgTimeout = 5 * time.Second
	b, err := r.StartBridge(o)
	if err != nil {
		return err
	}
	if err := WaitFor(ctx, 30*time.Second, "bridge ready", b.B.Ready); err != nil {
		return err
	}
	pub, err := r.NewPublisher(1000, 67)
	if err != nil {
		return err
	}
	const rate = 5000
	total := t.Dur(20*time.Second, 10*time.Second)
	done := pub.Go(ctx, rate, total)
	if err := hold(ctx, total*4/10); err != nil {
		return err
	}
	st, _ := r.NSQ.Channel(r.Topic, r.Channel)
	cut := px.Cut()
	t.Event("cut %d proxied nsqd connections (nsqd: %d in flight to the bridge, %d published so far)", cut, st.InFlightCount, pub.Sent())
	t.Metric("in_flight_at_cut", st.InFlightCount)
	if err := <-done; err != nil {
		return err
	}
	if err := r.WaitDrained(ctx, 3*time.Minute); err != nil {
		return err
	}
	mf := b.Metrics()
	err = b.Stop(time.Minute)
	t.Check("graceful stop returns nil", err == nil, "Run returned %v", err)
	st, _ = r.NSQ.Channel(r.Topic, r.Channel)
	redelivered := int(st.TimeoutCount + st.RequeueCount)
	t.Event("nsqd redelivered %d messages (%d timed out, %d requeued)", redelivered, st.TimeoutCount, st.RequeueCount)
	t.Metric("nsqd_redelivered", redelivered)
	obs, _, err := r.Observe(ctx)
	if err != nil {
		return err
	}
	a := r.Account(obs)
	noteBridge(t, mf)
	noteLate(t, obs.DeadLetters)
	t.Judge(a, Expect{GoodDL: []bridge.Reason{bridge.ReasonLate}})
	t.Check("no message in the stream is also dead-lettered", a.GoodDLAlsoInStream == 0,
		"%d messages are both in the stream and dead-lettered", a.GoodDLAlsoInStream)
	written := mf.Value("nsqk_bridge_redelivered_total", "state", "written")
	t.Note("the bridge FINished %.0f redeliveries of messages it had written", written)
	if redelivered == 0 || cut == 0 {
		t.Check("the cut hit messages in flight", false, "%d connections cut, nsqd redelivered %d", cut, redelivered)
	}
	return nil
}

// tcpProxy forwards TCP connections to a target and can cut them all at once.
type tcpProxy struct {
	Addr   string
	target string
	ln     net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]bool
}

func startTCPProxy(target string) (*tcpProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &tcpProxy{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]bool{}}
	go p.accept()
	return p, nil
}

func (p *tcpProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[u] = true, true
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			io.Copy(dst, src)
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(u, c)
		go pipe(c, u)
	}
}

// Cut closes every proxied connection (both sides) and returns how many client connections it
// closed. New connections are still accepted.
func (p *tcpProxy) Cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	n := len(p.conns) / 2
	clear(p.conns)
	return n
}

func (p *tcpProxy) Close() {
	p.ln.Close()
	p.Cut()
}

// memoryDistinctKeys floods the bridge program with messages of distinct keys and watches its
// RSS and its housekeeping.
func memoryDistinctKeys(ctx context.Context, t *T) error {
	keys, err := envInt(DistinctKeysEnv, t.N(2_000_000, 400_000))
	if err != nil {
		return err
	}
	budgetMiB, err := envInt(MemoryBudgetEnv, 8)
	if err != nil {
		return err
	}
	window := 10 * time.Second
	if v := os.Getenv(MemoryWindowEnv); v != "" {
		if window, err = time.ParseDuration(v); err != nil || window < time.Second {
			return fmt.Errorf("%s=%q: want a duration of at least 1s", MemoryWindowEnv, v)
		}
	}
	r, err := t.NewRig(ctx, RigOptions{Shards: 2, DiskOnly: true})
	if err != nil {
		return err
	}
	sink, err := nullsink.Start(nullsink.Config{Stream: r.Stream, Shards: 2})
	if err != nil {
		return err
	}
	t.Cleanup(func() { sink.Close() })
	r.ChildKinesisURL = sink.URL
	c, err := r.StartChild(ctx, "bridge", "--late-window", window.String(), "--written-window", window.String(), "--msg-timeout", min(window, time.Minute).String(),
		"--late-window-memory-mib", strconv.Itoa(budgetMiB), "--written-memory-mib", strconv.Itoa(budgetMiB))
	if err != nil {
		return err
	}
	rss := sample(time.Second, c.RSS)
	t.Cleanup(func() { rss.finish() })
	p, err := nsq.NewProducer(r.NSQ.TCPAddr(), nsq.NewConfig())
	if err != nil {
		return err
	}
	p.SetLogger(nil, nsq.LogLevelError)
	defer p.Stop()
	if err := hold(ctx, 2*time.Second); err != nil { // RSS of the idle bridge
		return err
	}
	startAt := rss.len()
	start := time.Now()
	batch := make([][]byte, 0, 200)
	for i := range keys {
		batch = append(batch, fmt.Appendf(nil, `{"user_id":"k%010d","seq":1}`, i))
		if len(batch) == cap(batch) || i == keys-1 {
			if err := p.MultiPublish(r.Topic, batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	t.Event("published %d messages with distinct keys in %.1fs", keys, time.Since(start).Seconds())
	if err := r.WaitDrained(ctx, 30*time.Minute); err != nil {
		return err
	}
	took := time.Since(start)
	t.Event("all %d written %.1fs after the flood began (%.0f msg/s)", keys, took.Seconds(), float64(keys)/took.Seconds())
	t.Metric("messages_per_second", int(float64(keys)/took.Seconds()))
	mf, err := c.Scrape(ctx)
	if err != nil {
		return err
	}
	c.Signal(syscall.SIGTERM)
	code, err := c.Wait(time.Minute)
	series := rss.finish()
	if err != nil {
		return err
	}
	t.Check("SIGTERM exits 0", code == 0, "exit code %d", code)

	ss := sink.Stats()
	t.Check("every message written once", ss.UserRecords == int64(keys) && r.DL.Len() == 0,
		"the sink received %d user records for %d published; %d dead letters", ss.UserRecords, keys, r.DL.Len())
	evicted := mf.ByLabel("nsqk_bridge_memory_evicted_total", "memory")
	t.Metric("memory_evicted", evicted)
	t.Check("the budgets evicted early, counted", evicted["late_window"] > 0 && evicted["written"] > 0,
		"evicted before their window: %s", fmtCounts(evicted))
	hk := mf.Histogram("nsqk_bridge_housekeeping_lock_seconds")
	within := 0.0
	for i, b := range hk.Bounds {
		if b <= 0.01 {
			within = hk.Counts[i]
		}
	}
	t.Check("no housekeeping pass held the lock over 10 ms", hk.Count > 0 && within == hk.Count,
		"%.0f passes, %.0f of them within 10 ms; mean %.3f ms", hk.Count, within, hk.Mean()*1000)
	ack := mf.Histogram("nsqk_bridge_ack_latency_seconds")
	t.Note("publish-to-ack latency p50 %.0f ms, p99 %.0f ms (backlog included)", ack.Quantile(.5)*1000, ack.Quantile(.99)*1000)

	rs := &RSSSeries{IntervalS: 1, KiB: series, Phases: map[string][2]int{"idle": {0, startAt}, "flood": {startAt, len(series)}}}
	rs.MinKiB, rs.MaxKiB = minMax(series)
	t.res.RSS = rs
	if startAt < 1 || startAt >= len(series) {
		t.Check("RSS sampled", false, "%d samples, flood from %d", len(series), startAt)
		return nil
	}
	base := series[startAt-1]
	_, peak := minMax(series[startAt:])
	limit := base + int64(2*budgetMiB+bridgecmd.WorkingMemoryMiB)<<10
	t.Check("RSS within the stated budget", peak <= limit,
		"RSS before the flood %d MiB, peak %d MiB (limit %d MiB = before + 2 x %d MiB budgets + %d MiB working allowance)",
		base>>10, peak>>10, limit>>10, budgetMiB, bridgecmd.WorkingMemoryMiB)
	t.Metric("rss_mib", map[string]int64{"before": base >> 10, "peak": peak >> 10})
	t.checkNoRace(c)
	return nil
}

// envInt reads a positive integer from the environment, def when unset.
func envInt(name string, def int) (int, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%s=%q: want a positive integer", name, v)
	}
	return n, nil
}
