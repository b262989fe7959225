package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nsqk/nsqk/cmd/nsqk/internal/benchkit"
	"github.com/nsqk/nsqk/cmd/nsqk/internal/nullsink"
	"github.com/nsqk/nsqk/shared/bridge"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/nsqlocal"
)

// scaleResult is one scaling run: one or more bridge processes draining several channels (on one
// or more nsqd nodes) until every one is empty.
type scaleResult struct {
	Name      string `json:"name"`    // routes-1, routes-4, groups-1, groups-2
	Section   string `json:"section"` // routes | groups
	Routes    int    `json:"routes"`  // routes per bridge process
	Nodes     int    `json:"nsqd_nodes"`
	Processes int    `json:"bridge_processes"`
	Messages  int    `json:"messages"` // in total, over every channel
	Drained   bool   `json:"drained"`
	// Rate = Messages / DrainSeconds, from the first delivery on any channel to every channel
	// holding nothing, read from nsqd every 2 ms.
	Rate           float64 `json:"rate_msgs_per_s"`
	DrainSeconds   float64 `json:"drain_seconds"`
	StartupSeconds float64 `json:"startup_seconds"`
	// Bridges are the bridge processes, each with its own CPU and memory.
	Bridges []scaleProc `json:"bridges"`
	// Orchestrator is this process during the run: the nsqd nodes, nsqlookupd, the sinks, the poller.
	OrchestratorCPUSeconds      float64 `json:"orchestrator_cpu_seconds"`
	OrchestratorCPUMicrosPerMsg float64 `json:"orchestrator_cpu_us_per_msg"`
	// OrchestratorCPUPercent is its CPU in % of one core from the first spawn to the last exit.
	OrchestratorCPUPercent float64 `json:"orchestrator_cpu_percent_of_one_core"`
	SinkCPUMicrosPerMsg    float64 `json:"sink_cpu_us_per_msg"`
	// OtherCPUPercent is busy CPU neither the bridges nor this process used, in % of all cores.
	OtherCPUPercent float64                 `json:"other_cpu_percent"`
	LoadAvg         []float64               `json:"loadavg_before"`
	NSQRequeued     uint64                  `json:"nsq_requeued"`
	NSQTimedOut     uint64                  `json:"nsq_timed_out"`
	Verification    []nullsink.Verification `json:"verification"` // one per sink (stream or bridge)
	Error           string                  `json:"error,omitempty"`
}

// scaleProc is one bridge process of a scaling run.
type scaleProc struct {
	Name     string  `json:"name"`
	Messages int     `json:"messages"` // what it should acknowledge
	Acked    float64 `json:"acked"`
	// Kinesis records (aggregates) and PutRecords calls per 1k messages: how full its batches were.
	RecordsPer1k  float64 `json:"kinesis_records_per_1k_msgs"`
	PutCallsPer1k float64 `json:"putrecords_calls_per_1k_msgs"`
	// CPU of its whole life from rusage; the drain-only figure from /proc at first delivery and end.
	UserSeconds          float64 `json:"user_cpu_seconds"`
	SystemSeconds        float64 `json:"system_cpu_seconds"`
	CPUMicrosPerMsg      float64 `json:"cpu_us_per_msg"`
	DrainCPUMicrosPerMsg float64 `json:"drain_cpu_us_per_msg"`
	// DrainCPUPercent is its drain-only CPU in % of one core over the drain time.
	DrainCPUPercent float64 `json:"drain_cpu_percent_of_one_core"`
	MaxRSSMB        float64 `json:"max_rss_mb"`
	ExitCode        int     `json:"exit_code"`
	Log             string  `json:"log"`
}

// scaleChannel is a channel a scaling run empties.
type scaleChannel struct {
	node           *nsqlocal.NSQD
	topic, channel string
	count          int
}

// scaleBridge is a bridge process of a scaling run, not yet started.
type scaleBridge struct {
	name     string
	endpoint string
	args     []string // besides the common ones
	messages int
}

// oneLine summarises a scaling run for the progress output.
func (r *scaleResult) oneLine() string {
	if !r.Drained {
		return fmt.Sprintf("%-20s FAILED: %s", r.Name, firstLine(r.Error))
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%-20s %9.0f msg/s  %6.2fs  orchestrator %5.2f us/msg  other load %2.0f%%", r.Name, r.Rate, r.DrainSeconds,
		r.OrchestratorCPUMicrosPerMsg, r.OtherCPUPercent)
	for _, p := range r.Bridges {
		fmt.Fprintf(&sb, "  [%s: cpu %.2f us/msg, %.0f%% of a core, rss %.0f MB, exit %d]", p.Name, p.CPUMicrosPerMsg, p.DrainCPUPercent, p.MaxRSSMB, p.ExitCode)
	}
	fmt.Fprintf(&sb, "  verify: %s", okText(r.verified()))
	if r.Error != "" {
		fmt.Fprintf(&sb, "  ERROR: %s", firstLine(r.Error))
	}
	return sb.String()
}

func (r *scaleResult) verified() bool {
	if len(r.Verification) == 0 {
		return false
	}
	for _, v := range r.Verification {
		if !v.OK {
			return false
		}
	}
	return true
}

// routesScaling drains --scale-messages through one route, then the same number split over 4
// topics through 4 routes of one bridge process into 4 streams; --repeat times, interleaved.
func (b *bench) routesScaling(ctx context.Context) error {
	for i := 1; i <= b.o.repeat; i++ {
		for _, n := range []int{1, 4} {
			if ctx.Err() != nil {
				return nil
			}
			res, err := b.routesRun(ctx, n, repeatName(fmt.Sprintf("routes-%d", n), i, b.o.repeat))
			if err != nil {
				return err
			}
			b.r.Scaling = append(b.r.Scaling, res)
		}
	}
	return nil
}

func (b *bench) routesRun(ctx context.Context, routes int, name string) (scaleResult, error) {
	per := b.o.scaleMessages / 4 * 4 / routes // the same total through 1 and 4 routes
	var chans []scaleChannel
	var verifiers []*nullsink.Verifier
	front := &sinkFront{sinks: map[string]*nullsink.Server{}}
	var cfg strings.Builder
	cfg.WriteString("routes:\n")
	for i := 1; i <= routes; i++ {
		topic, stream := fmt.Sprintf("scale-%s-%d", name, i), fmt.Sprintf("%s-%d-%d", streamName, routes, i)
		set, err := b.publishOn(ctx, b.nsqd, topic, []string{"drain"}, per, b.o.seed+uint64(10*routes+i))
		if err != nil {
			return scaleResult{}, err
		}
		v := set.verifier()
		verifiers = append(verifiers, v)
		front.sinks[stream] = nullsink.New(nullsink.Config{Stream: stream, Shards: b.o.shards, Verifier: v, Latency: b.o.sinkLatency})
		chans = append(chans, scaleChannel{node: b.nsqd, topic: topic, channel: "drain", count: per})
		fmt.Fprintf(&cfg, "  - topic: %s\n    channel: drain\n    stream: %s\n", topic, stream)
	}
	cfgPath := filepath.Join(b.logDir, name+".yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		return scaleResult{}, err
	}
	if err := front.start(); err != nil {
		return scaleResult{}, err
	}
	defer front.close()
	res := scaleResult{Name: name, Section: "routes", Routes: routes, Nodes: 1, Processes: 1}
	b.scaleDrain(ctx, &res, chans, []scaleBridge{{name: name, endpoint: front.url, messages: per * routes,
		args: []string{"--nsqd-tcp-address", b.nsqd.TCPAddr, "--nsqd-http-address", b.nsqd.HTTPAddr, "--config", cfgPath}}})
	var sinks []*nullsink.Server
	for _, s := range front.sinks {
		sinks = append(sinks, s)
	}
	b.finishScale(&res, sinks, verifiers)
	return res, nil
}

// groupsScaling starts an nsqlookupd and two nsqd nodes, then drains --scale-messages on one node
// with one bridge, and --scale-messages on each node with two partitioned bridges.
func (b *bench) groupsScaling(ctx context.Context) error {
	lk, err := nsqlocal.StartLookupd(nil)
	if err != nil {
		return err
	}
	defer lk.Stop()
	nodes, err := b.partitionedNodes(lk)
	for _, n := range nodes {
		defer n.Stop()
	}
	if err != nil {
		return err
	}
	b.say("nsqlookupd on http://%s; nsqd nodes %s (partition 0/2) and %s (partition 1/2)", lk.HTTPAddr, nodes[0].TCPAddr, nodes[1].TCPAddr)
	for i := 1; i <= b.o.repeat && ctx.Err() == nil; i++ {
		if err := b.groupsOne(ctx, lk, nodes[0], i); err != nil || ctx.Err() != nil {
			return err
		}
		if err := b.groupsTwo(ctx, lk, nodes, i); err != nil {
			return err
		}
	}
	return nil
}

// groupsOne drains --scale-messages with one bridge from a topic only node holds.
func (b *bench) groupsOne(ctx context.Context, lk *nsqlocal.Lookupd, node *nsqlocal.NSQD, rep int) error {
	n, name, topic := b.o.scaleMessages, repeatName("groups-1", rep, b.o.repeat), repeatName("groups-one", rep, b.o.repeat)
	set, err := b.publishOn(ctx, node, topic, []string{"drain"}, n, b.o.seed+uint64(100*rep))
	if err != nil {
		return err
	}
	if err := waitProducers(ctx, lk.HTTPAddr, topic, 1); err != nil {
		return err
	}
	v := set.verifier()
	srv, err := nullsink.Start(nullsink.Config{Stream: streamName, Shards: b.o.shards, Verifier: v, Latency: b.o.sinkLatency})
	if err != nil {
		return err
	}
	defer srv.Close()
	res := scaleResult{Name: name, Section: "groups", Routes: 1, Nodes: 1, Processes: 1}
	b.scaleDrain(ctx, &res, []scaleChannel{{node, topic, "drain", n}}, []scaleBridge{{name: name, endpoint: srv.URL, messages: n,
		args: []string{"--lookupd-http-address", lk.HTTPAddr, "--topic", topic, "--channel", "drain", "--stream", streamName}}})
	b.finishScale(&res, []*nullsink.Server{srv}, []*nullsink.Verifier{v})
	b.r.Scaling = append(b.r.Scaling, res)
	return nil
}

// groupsTwo drains --scale-messages from each node with two partitioned bridges. Each bridge
// writes into its own sink, which expects exactly the messages of the node its partition owns.
func (b *bench) groupsTwo(ctx context.Context, lk *nsqlocal.Lookupd, nodes []*nsqlocal.NSQD, rep int) error {
	n, name, topic := b.o.scaleMessages, repeatName("groups-2", rep, b.o.repeat), repeatName("groups-two", rep, b.o.repeat)
	var chans []scaleChannel
	var bridges []scaleBridge
	var sinks []*nullsink.Server
	var verifiers []*nullsink.Verifier
	defer func() {
		for _, s := range sinks {
			s.Close()
		}
	}()
	for i, node := range nodes {
		set, err := b.publishOn(ctx, node, topic, []string{"drain"}, n, b.o.seed+uint64(100*rep+1+i))
		if err != nil {
			return err
		}
		v := set.verifier()
		srv, err := nullsink.Start(nullsink.Config{Stream: streamName, Shards: b.o.shards, Verifier: v, Latency: b.o.sinkLatency})
		if err != nil {
			return err
		}
		sinks, verifiers = append(sinks, srv), append(verifiers, v)
		chans = append(chans, scaleChannel{node, topic, "drain", n})
		bridges = append(bridges, scaleBridge{name: fmt.Sprintf("%s-p%d", name, i), endpoint: srv.URL, messages: n,
			args: []string{"--lookupd-http-address", lk.HTTPAddr, "--topic", topic, "--channel", "drain", "--stream", streamName,
				"--nsqd-partition", fmt.Sprintf("%d/2", i)}})
	}
	if err := waitProducers(ctx, lk.HTTPAddr, topic, 2); err != nil {
		return err
	}
	res := scaleResult{Name: name, Section: "groups", Routes: 1, Nodes: 2, Processes: 2}
	b.scaleDrain(ctx, &res, chans, bridges)
	b.finishScale(&res, sinks, verifiers)
	b.r.Scaling = append(b.r.Scaling, res)
	return nil
}

// partitionedNodes starts two nsqd nodes registered with lk whose TCP addresses hash to different
// partitions of 2 (node i is read by the bridge with --nsqd-partition i/2). The second node's
// port is chosen before it starts: stopping an nsqd that has only just started races with its
// own start-up.
func (b *bench) partitionedNodes(lk *nsqlocal.Lookupd) ([]*nsqlocal.NSQD, error) {
	start := func(tcp string) (*nsqlocal.NSQD, error) {
		return nsqlocal.Start(nsqlocal.Options{TCPAddress: tcp, MaxRdyCount: int64(max(10_000, b.o.maxInFlight)),
			MemQueueSize: int64(b.o.scaleMessages + 10_000), LookupdTCPAddresses: []string{lk.TCPAddr}})
	}
	p := bridge.Partition{Count: 2}
	first, err := start("")
	if err != nil {
		return nil, err
	}
	taken := p.Owner(first.TCPAddr)
	for tries := 0; tries < 100; tries++ {
		port, err := kinesislocal.FreePort()
		if err != nil {
			return []*nsqlocal.NSQD{first}, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		if p.Owner(addr) == taken {
			continue
		}
		second, err := start(addr)
		if err != nil {
			return []*nsqlocal.NSQD{first}, err
		}
		if taken == 0 {
			return []*nsqlocal.NSQD{first, second}, nil
		}
		return []*nsqlocal.NSQD{second, first}, nil
	}
	return []*nsqlocal.NSQD{first}, errors.New("no free port whose nsqd address hashes to the other partition of 2 in 100 tries")
}

// waitProducers polls nsqlookupd until it lists n nodes for the topic.
func waitProducers(ctx context.Context, lookupdHTTP, topic string, n int) error {
	client := &http.Client{Timeout: 2 * time.Second}
	var got int
	err := poll(ctx, 30*time.Second, 20*time.Millisecond, func() bool {
		resp, err := client.Get("http://" + lookupdHTTP + "/lookup?topic=" + url.QueryEscape(topic))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var out struct {
			Producers []json.RawMessage `json:"producers"`
		}
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil {
			return false
		}
		got = len(out.Producers)
		return got >= n
	})
	if err != nil {
		return fmt.Errorf("nsqlookupd lists %d of %d nsqd nodes for %s: %w", got, n, topic, err)
	}
	return nil
}

// scaleDrain starts the bridges and waits until every channel is empty; failures go into res.Error.
func (b *bench) scaleDrain(ctx context.Context, res *scaleResult, chans []scaleChannel, bridges []scaleBridge) {
	if err := b.scaleDrainInto(ctx, res, chans, bridges); err != nil {
		res.Error = strings.TrimSpace(res.Error + "\n" + err.Error())
	}
}

func (b *bench) scaleDrainInto(ctx context.Context, res *scaleResult, chans []scaleChannel, bridges []scaleBridge) error {
	total := 0
	for _, c := range chans {
		if got := remainingOf(channelStatsOn(c.node, c.topic, c.channel)); int(got) != c.count {
			return fmt.Errorf("channel %s/%s holds %d messages, not %d", c.topic, c.channel, got, c.count)
		}
		total += c.count
	}
	res.Messages = total
	remaining := func() (rem int64, started bool) {
		for _, c := range chans {
			st := channelStatsOn(c.node, c.topic, c.channel)
			rem += remainingOf(st)
			started = started || st.Depth < int64(c.count) || st.InFlightCount > 0
		}
		return rem, started
	}
	runtime.GC()
	self0 := benchkit.SelfUsage()
	sys0, _ := benchkit.SystemCPU()
	res.LoadAvg = benchkit.LoadAvg()

	children := make([]*childProc, len(bridges))
	defer func() {
		for _, c := range children {
			c.kill()
		}
	}()
	t0 := time.Now()
	for i, s := range bridges {
		c, err := b.spawnScaleBridge(s)
		if err != nil {
			return err
		}
		children[i] = c
		res.Bridges = append(res.Bridges, scaleProc{Name: s.name, Messages: s.messages, Log: logPath(b.logDir, s.name)})
	}
	var first, last time.Time
	cpuAtFirst := make([]time.Duration, len(children))
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	deadline := time.Now().Add(b.runTimeout(total))
	for {
		now := time.Now()
		rem, started := remaining()
		if first.IsZero() && started {
			first = now
			for i, c := range children {
				cpuAtFirst[i] = processCPU(c.pid())
			}
		}
		if rem == 0 && !first.IsZero() {
			last = now
			break
		}
		for _, c := range children {
			if c.hasExited() {
				return fmt.Errorf("%w: %s (%v) with %d messages left\n%s", errChildExited, c.name, c.waitErr, rem, c.tail())
			}
		}
		if now.After(deadline) {
			return fmt.Errorf("not drained after %s: %d of %d messages left", b.runTimeout(total), rem, total)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	res.Drained = true
	res.DrainSeconds = last.Sub(first).Seconds()
	res.Rate = float64(total) / res.DrainSeconds
	res.StartupSeconds = first.Sub(t0).Seconds()
	for i, c := range children {
		if p, err := benchkit.ReadProc(c.pid()); err == nil {
			d := p.CPU - cpuAtFirst[i]
			res.Bridges[i].DrainCPUMicrosPerMsg = float64(d.Microseconds()) / float64(bridges[i].messages)
			res.Bridges[i].DrainCPUPercent = 100 * d.Seconds() / res.DrainSeconds
		}
	}
	var errs []string
	var childCPU time.Duration
	var lastExit time.Time
	for i, c := range children {
		p := &res.Bridges[i]
		f, err := c.waitAcked(ctx, int64(p.Messages), 10*time.Second)
		if f != nil {
			p.Acked = f.Value("nsqk_bridge_messages_acked_total")
			p.RecordsPer1k = f.Value("nsqk_bridge_aggregates_total") / float64(p.Messages) * 1000
			p.PutCallsPer1k = f.Value("nsqk_bridge_putrecords_calls_total") / float64(p.Messages) * 1000
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", c.name, err))
		}
	}
	for i, c := range children {
		p := &res.Bridges[i]
		code, _, err := c.stop(45 * time.Second)
		p.ExitCode = code
		if err != nil {
			errs = append(errs, err.Error())
		} else if code != 0 {
			errs = append(errs, fmt.Sprintf("%s exited with code %d after SIGTERM (a clean shutdown exits 0)\n%s", c.name, code, c.tail()))
		}
		u := c.usage()
		p.UserSeconds, p.SystemSeconds = u.User.Seconds(), u.System.Seconds()
		p.CPUMicrosPerMsg = float64(u.CPU().Microseconds()) / float64(p.Messages)
		p.MaxRSSMB = float64(c.peakRSS()) / (1 << 20)
		childCPU += u.CPU()
		if c.exited.After(lastExit) {
			lastExit = c.exited
		}
	}
	for _, c := range chans {
		st := channelStatsOn(c.node, c.topic, c.channel)
		res.NSQRequeued += st.RequeueCount
		res.NSQTimedOut += st.TimeoutCount
	}
	self1 := benchkit.SelfUsage()
	res.OrchestratorCPUSeconds = (self1.CPU() - self0.CPU()).Seconds()
	res.OrchestratorCPUMicrosPerMsg = res.OrchestratorCPUSeconds / float64(total) * 1e6
	wall := lastExit.Sub(t0).Seconds()
	res.OrchestratorCPUPercent = 100 * res.OrchestratorCPUSeconds / wall
	if sys1, err := benchkit.SystemCPU(); err == nil && sys0 > 0 {
		other := (sys1 - sys0).Seconds() - childCPU.Seconds() - res.OrchestratorCPUSeconds
		res.OtherCPUPercent = max(0, 100*other/(wall*float64(runtime.NumCPU())))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

// finishScale adds the sinks' CPU and verdicts and prints the run.
func (b *bench) finishScale(res *scaleResult, sinks []*nullsink.Server, verifiers []*nullsink.Verifier) {
	var cpu time.Duration
	for _, s := range sinks {
		cpu += s.Stats().HandlerCPU
	}
	if res.Messages > 0 {
		res.SinkCPUMicrosPerMsg = float64(cpu.Microseconds()) / float64(res.Messages)
	}
	for _, v := range verifiers {
		vr := v.Result()
		res.Verification = append(res.Verification, vr)
		if !vr.OK {
			b.say("   %s: exact-once check FAILED: %s %v", res.Name, vr.Summary(), vr.Problems)
		}
	}
	b.say("   %s", res.oneLine())
}

// spawnScaleBridge starts `nsqk bridge` with the benchmark's common settings.
func (b *bench) spawnScaleBridge(s scaleBridge) (*childProc, error) {
	port, err := kinesislocal.FreePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	args := append([]string{"bridge"}, s.args...)
	args = append(args, "--max-in-flight", strconv.Itoa(b.o.maxInFlight), "--max-buffered-time", b.o.maxBuffered.String(),
		"--metrics-address", addr, "--log-level", "warn")
	args = append(args, strings.Fields(b.o.bridgeArgs)...)
	c, err := b.spawn(s.name, b.exe, args, b.childEnv(b.awsEnv(s.endpoint)...), false)
	if err != nil {
		return nil, err
	}
	c.metrics = "http://" + addr
	return c, nil
}

// sinkFront is one Kinesis endpoint in front of several null sinks, one per stream: a bridge has
// one endpoint for all its routes. It passes each request to the sink of the stream it names.
type sinkFront struct {
	sinks map[string]*nullsink.Server
	url   string
	srv   *http.Server
	pool  sync.Pool
}

func (f *sinkFront) start() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	f.url = "http://" + ln.Addr().String()
	f.srv = &http.Server{Handler: f}
	go f.srv.Serve(ln)
	return nil
}

func (f *sinkFront) close() { f.srv.Close() }

func (f *sinkFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	buf, _ := f.pool.Get().(*bytes.Buffer)
	if buf == nil {
		buf = &bytes.Buffer{}
	}
	defer f.pool.Put(buf)
	buf.Reset()
	if _, err := io.Copy(buf, r.Body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s := f.sinks[streamOf(buf.Bytes())]
	if s == nil {
		for _, any := range f.sinks {
			s = any // it answers ResourceNotFoundException for a stream it does not serve
			break
		}
	}
	r.Body = io.NopCloser(bytes.NewReader(buf.Bytes()))
	r.ContentLength = int64(buf.Len())
	s.Handler().ServeHTTP(w, r)
}

// streamOf returns the stream a Kinesis JSON request names (StreamName, else the end of
// StreamARN). Record data is base64 and partition keys are user ids, so the first match is the
// field itself.
func streamOf(body []byte) string {
	if v, ok := jsonString(body, `"StreamName":"`); ok {
		return v
	}
	if v, ok := jsonString(body, `"StreamARN":"`); ok {
		return v[strings.LastIndexByte(v, '/')+1:]
	}
	return ""
}

func jsonString(body []byte, field string) (string, bool) {
	i := bytes.Index(body, []byte(field))
	if i < 0 {
		return "", false
	}
	rest := body[i+len(field):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return "", false
	}
	return string(rest[:j]), true
}

// scalingOf returns the scaling runs named base or base-N (the repetitions of one kind of run).
func (r *Report) scalingOf(base string) []scaleResult {
	var out []scaleResult
	for _, x := range r.Scaling {
		if isRepeatOf(x.Name, base) {
			out = append(out, x)
		}
	}
	return out
}

// scaleFigures: the rate of each kind of scaling run (median over --repeat), the ratios (median of
// the i-th runs' ratios) judged against their targets, each bridge's CPU per message, the
// benchmark process's share and the exact-once checks.
func scaleFigures(r *Report) {
	const s = "scaling"
	med := func(runs []scaleResult, f func(scaleResult) float64) float64 {
		var v []float64
		for _, x := range runs {
			if x.Drained {
				v = append(v, f(x))
			}
		}
		return medianValue(v)
	}
	row := func(runs []scaleResult, base, what string) {
		if len(runs) == 0 {
			return
		}
		for _, x := range runs {
			if !x.Drained {
				r.add(s, what, math.NaN(), "msg/s", x.Name+" not drained: "+firstLine(x.Error), "", verdictFail)
				return
			}
		}
		rate := med(runs, func(x scaleResult) float64 { return x.Rate })
		r.add(s, what+medianOf(len(runs)), rate, "msg/s", fmt.Sprintf("%s (%s messages)", rateText(rate), thousands(float64(runs[0].Messages))), "", "")
		for j := range runs[0].Bridges {
			bp := func(f func(scaleProc) float64) float64 {
				return med(runs, func(x scaleResult) float64 {
					if j < len(x.Bridges) {
						return f(x.Bridges[j])
					}
					return math.NaN()
				})
			}
			label := "  " + base + ": bridge CPU per message"
			if len(runs[0].Bridges) > 1 {
				label = fmt.Sprintf("  %s: bridge %d/%d CPU per message", base, j, len(runs[0].Bridges))
			}
			cpu := bp(func(p scaleProc) float64 { return p.CPUMicrosPerMsg })
			r.add(s, label, cpu, "us/msg", fmt.Sprintf("%s (drain only %s, %.0f%% of a core; per 1k msgs %.2f records, %.2f PutRecords)", usText(cpu),
				usText(bp(func(p scaleProc) float64 { return p.DrainCPUMicrosPerMsg })), bp(func(p scaleProc) float64 { return p.DrainCPUPercent }),
				bp(func(p scaleProc) float64 { return p.RecordsPer1k }), bp(func(p scaleProc) float64 { return p.PutCallsPer1k })), "", "")
		}
		orch := med(runs, func(x scaleResult) float64 { return x.OrchestratorCPUMicrosPerMsg })
		r.add(s, "  "+base+": orchestrator CPU per message (nsqd, sinks, poller)", orch, "us/msg",
			fmt.Sprintf("%s (%.0f%% of a core, spawn to exit; sinks %s)", usText(orch), med(runs, func(x scaleResult) float64 { return x.OrchestratorCPUPercent }),
				usText(med(runs, func(x scaleResult) float64 { return x.SinkCPUMicrosPerMsg }))), "", "")
		ok, sinks := true, 0
		var uniq, exp, dup, miss, ooo int64
		for _, x := range runs {
			ok = ok && x.verified()
			for _, v := range x.Verification {
				uniq, exp, dup, miss, ooo = uniq+v.Unique, exp+v.Expected, dup+v.Duplicates, miss+v.Missing, ooo+v.OutOfOrder
				sinks++
				if !v.OK {
					r.note("%s: exact-once check failed: %s; %s", x.Name, v.Summary(), strings.Join(v.Problems, "; "))
				}
			}
			if x.OtherCPUPercent > 15 {
				r.note("%s: other processes took %.0f%% of all cores during the run", x.Name, x.OtherCPUPercent)
			}
		}
		text := fmt.Sprintf("%d/%d once, %d dup, %d missing, %d out of order (%d sinks)", uniq, exp, dup, miss, ooo, sinks)
		r.add(s, "  "+base+": exact-once", math.NaN(), "", text, "every message once, in order", passIf(ok, verdictFail))
	}
	ratio := func(a, b []scaleResult, what string, target float64) {
		var v []float64
		for i := range min(len(a), len(b)) {
			if a[i].Drained && b[i].Drained && b[i].Rate > 0 {
				v = append(v, a[i].Rate/b[i].Rate)
			}
		}
		if len(v) == 0 {
			return
		}
		m := medianValue(v)
		r.add(s, what+medianOf(len(v)), m, "x", fmt.Sprintf("%.2fx", m), fmt.Sprintf(">= %.2fx", target), passIf(m >= target, verdictMiss))
	}
	one, four := r.scalingOf("routes-1"), r.scalingOf("routes-4")
	row(one, "routes-1", "1 route, one bridge")
	row(four, "routes-4", "4 routes (4 topics -> 4 streams), one bridge")
	ratio(four, one, "4 routes / 1 route: drain rate", targetRoutesRatio)
	g1, g2 := r.scalingOf("groups-1"), r.scalingOf("groups-2")
	row(g1, "groups-1", "one bridge, one nsqd node (nsqlookupd)")
	row(g2, "groups-2", "two bridges (--nsqd-partition 0/2, 1/2), two nsqd nodes")
	ratio(g2, g1, "two bridges on two nodes / one bridge on one node: drain rate", targetGroupsRatio)
	if len(g2) > 0 {
		r.note("groups: the nsqd nodes, nsqlookupd and the null sinks run in the benchmark process on the same %d cores as the bridges; "+
			"see the orchestrator rows for their share", r.Machine.Cores)
	}
}
