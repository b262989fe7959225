package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/nsqk/nsqk/cmd/nsqk/internal/benchkit"
	"github.com/nsqk/nsqk/cmd/nsqk/internal/nullsink"
)

// Kinds of Kinesis endpoint a run writes to.
const (
	sinkNone       = ""
	sinkNull       = "null"
	sinkThrottled  = "null-throttled"
	sinkKinesalite = "kinesalite"
)

// drainPoll is how often nsqd's channel counters are read during a drain.
const drainPoll = 2 * time.Millisecond

// drainResult is one drain run: a child consuming a pre-published channel until it is empty.
type drainResult struct {
	Name     string `json:"name"` // = channel
	Kind     string `json:"kind"` // baseline | bridge
	Sink     string `json:"sink,omitempty"`
	Shards   int    `json:"shards,omitempty"`
	Messages int    `json:"messages"`
	Drained  bool   `json:"drained"`
	// Rate = Messages / DrainSeconds. DrainSeconds runs from the first delivery (the channel's
	// depth drops below Messages) to the channel holding nothing (depth + in flight + deferred = 0,
	// i.e. every message FINished), read from nsqd every 2 ms.
	Rate            float64 `json:"rate_msgs_per_s"`
	DrainSeconds    float64 `json:"drain_seconds"`
	StartupSeconds  float64 `json:"startup_seconds"`  // spawn to first delivery
	ShutdownSeconds float64 `json:"shutdown_seconds"` // SIGTERM to exit
	ExitCode        int     `json:"exit_code"`
	// CPU of the child's whole life, from its rusage after it exited; peak RSS from its VmHWM.
	UserSeconds     float64 `json:"user_cpu_seconds"`
	SystemSeconds   float64 `json:"system_cpu_seconds"`
	CPUMicrosPerMsg float64 `json:"cpu_us_per_msg"`
	// DrainCPUMicrosPerMsg counts only the drain (from /proc at first delivery and at the end;
	// 10 ms resolution): the lifetime figure minus start-up and shutdown.
	DrainCPUMicrosPerMsg float64 `json:"drain_cpu_us_per_msg"`
	MaxRSSMB             float64 `json:"max_rss_mb"`
	// Context switches of the child per message (rusage): wake-ups and syscalls that block.
	CtxSwitchesPerMsg float64 `json:"context_switches_per_msg"`
	// LongestStallMs is the longest time without any message FINished during the drain.
	LongestStallMs float64 `json:"longest_stall_ms"`
	StallAtSeconds float64 `json:"stall_at_seconds"`
	// NSQ channel counters: should both stay 0.
	NSQRequeued uint64 `json:"nsq_requeued"`
	NSQTimedOut uint64 `json:"nsq_timed_out"`
	// Received is what the baseline consumer reports.
	Received int64          `json:"received,omitempty"`
	Bridge   *bridgeFigures `json:"bridge,omitempty"`
	// SinkStats and Verification come from the null sink (or reading kinesalite back).
	SinkStats           *nullsink.Stats        `json:"sink_stats,omitempty"`
	SinkCPUMicrosPerMsg float64                `json:"sink_cpu_us_per_msg,omitempty"`
	Verification        *nullsink.Verification `json:"verification,omitempty"`
	ReadbackSeconds     float64                `json:"readback_seconds,omitempty"`
	// EmulatorCPUSeconds is kinesalite's CPU during the run.
	EmulatorCPUSeconds float64 `json:"emulator_cpu_seconds,omitempty"`
	// Orchestrator is this process during the run: nsqd, the sink, the poller.
	OrchestratorCPUSeconds float64 `json:"orchestrator_cpu_seconds"`
	OrchestratorGCs        uint32  `json:"orchestrator_gc_cycles"`
	// OtherCPUPercent is the machine's busy CPU during the run that was neither the child, this
	// process nor the emulator, in percent of all cores: other work disturbing the measurement.
	OtherCPUPercent float64   `json:"other_cpu_percent"`
	LoadAvg         []float64 `json:"loadavg_before"`
	Timeline        []point   `json:"timeline"`
	Log             string    `json:"log"`
	Profile         string    `json:"profile,omitempty"`
	Error           string    `json:"error,omitempty"`
}

// point is a timeline sample, every 100 ms from the first delivery.
type point struct {
	T         float64 `json:"t"`         // seconds since the first delivery
	Remaining int64   `json:"remaining"` // messages not yet FINished
	RSSMB     float64 `json:"rss_mb"`
	CPU       float64 `json:"cpu_s"` // child CPU so far
}

// drainSpec says what to drain with what.
type drainSpec struct {
	name, topic string
	messages    int
	sink        string
	shards      int
	server      *nullsink.Server // the null sink, if any (its stats go into the result)
	endpoint    string           // Kinesis endpoint for a bridge
	emulatorPID int              // kinesalite's pid, for its CPU
	extraArgs   []string
	exe         string                    // the bridge program (default: the nsqk under test)
	released    bool                      // a baseline run with go-nsq as released
	profile     func(c *childProc) func() // started after spawn; the returned func stops it
}

func (b *bench) runTimeout(n int) time.Duration {
	if b.o.timeout > 0 {
		return b.o.timeout
	}
	return 2*time.Minute + time.Duration(n)*time.Millisecond // 1000 msg/s worst case
}

// drain runs one drain and never returns an error: failures are in Error.
func (b *bench) drain(ctx context.Context, s drainSpec) drainResult {
	res := drainResult{Name: s.name, Messages: s.messages, Sink: s.sink, Shards: s.shards, Kind: "bridge", Log: logPath(b.logDir, s.name)}
	if s.sink == sinkNone {
		res.Kind = "baseline"
	}
	if err := b.drainInto(ctx, s, &res); err != nil {
		res.Error = err.Error()
	}
	b.say("   %s", res.oneLine())
	return res
}

func (b *bench) drainInto(ctx context.Context, s drainSpec, res *drainResult) error {
	if st := b.channelStats(s.topic, s.name); int(remainingOf(st)) != s.messages {
		return fmt.Errorf("channel %s holds %d messages, not %d", s.name, remainingOf(st), s.messages)
	}
	runtime.GC() // start every run with a settled heap here, so GC in this process is not timed
	var gc0, gc1 runtime.MemStats
	runtime.ReadMemStats(&gc0)
	self0 := benchkit.SelfUsage()
	emu0 := processCPU(s.emulatorPID)
	sys0, _ := benchkit.SystemCPU()
	res.LoadAvg = benchkit.LoadAvg()

	var c *childProc
	var err error
	if res.Kind == "baseline" {
		c, err = b.spawnBaseline(s.name, s.topic, s.name, s.released)
	} else {
		c, err = b.spawnBridge(s.name, bridgeSpec{topic: s.topic, channel: s.name, endpoint: s.endpoint, extra: s.extraArgs, exe: s.exe})
	}
	if err != nil {
		return err
	}
	defer c.kill()
	var stopProfile func()
	if s.profile != nil {
		stopProfile = s.profile(c)
	}

	var first, last, lastChange, nextSample time.Time
	var cpuAtFirst time.Duration
	prev := int64(s.messages)
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	deadline := time.Now().Add(b.runTimeout(s.messages))
	for {
		now := time.Now()
		st := b.channelStats(s.topic, s.name)
		rem := remainingOf(st)
		if first.IsZero() && (st.Depth < int64(s.messages) || st.InFlightCount > 0) {
			first, lastChange, nextSample = now, now, now
			if p, err := benchkit.ReadProc(c.pid()); err == nil {
				cpuAtFirst = p.CPU
			}
		}
		if !first.IsZero() {
			if rem != prev {
				if gap := now.Sub(lastChange); gap.Seconds()*1000 > res.LongestStallMs {
					res.LongestStallMs, res.StallAtSeconds = gap.Seconds()*1000, lastChange.Sub(first).Seconds()
				}
				lastChange, prev = now, rem
			}
			if !now.Before(nextSample) || rem == 0 {
				pt := point{T: now.Sub(first).Seconds(), Remaining: rem}
				if p, err := benchkit.ReadProc(c.pid()); err == nil {
					pt.RSSMB, pt.CPU = float64(p.RSS)/(1<<20), p.CPU.Seconds()
				}
				res.Timeline = append(res.Timeline, pt)
				nextSample = nextSample.Add(100 * time.Millisecond)
			}
		}
		if rem == 0 && !first.IsZero() {
			last = now
			break
		}
		if c.hasExited() {
			return fmt.Errorf("%w: %s (%v) with %d messages left\n%s", errChildExited, s.name, c.waitErr, rem, c.tail())
		}
		if now.After(deadline) {
			return fmt.Errorf("not drained after %s: %d of %d messages left", b.runTimeout(s.messages), rem, s.messages)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	res.Drained = true
	res.DrainSeconds = last.Sub(first).Seconds()
	res.Rate = float64(s.messages) / res.DrainSeconds
	res.StartupSeconds = first.Sub(c.started).Seconds()
	if p, err := benchkit.ReadProc(c.pid()); err == nil {
		res.DrainCPUMicrosPerMsg = float64((p.CPU - cpuAtFirst).Microseconds()) / float64(s.messages)
	}
	if stopProfile != nil {
		stopProfile()
	}

	var runErr error
	if res.Kind == "bridge" {
		f, err := c.waitAcked(ctx, int64(s.messages), 10*time.Second)
		if f != nil {
			res.Bridge = bridgeFiguresOf(f)
		}
		runErr = err
	}
	code, shutdown, err := c.stop(45 * time.Second)
	res.ExitCode, res.ShutdownSeconds = code, shutdown.Seconds()
	if err != nil && runErr == nil {
		runErr = err
	}
	if code != 0 && runErr == nil {
		runErr = fmt.Errorf("%s exited with code %d after SIGTERM (a clean shutdown exits 0)\n%s", s.name, code, c.tail())
	}
	u := c.usage()
	res.UserSeconds, res.SystemSeconds = u.User.Seconds(), u.System.Seconds()
	res.CPUMicrosPerMsg = float64(u.CPU().Microseconds()) / float64(s.messages)
	res.CtxSwitchesPerMsg = float64(u.VolCtxSw+u.InvolCtxSw) / float64(s.messages)
	res.MaxRSSMB = float64(c.peakRSS()) / (1 << 20)

	st := b.channelStats(s.topic, s.name)
	res.NSQRequeued, res.NSQTimedOut = st.RequeueCount, st.TimeoutCount
	self1 := benchkit.SelfUsage()
	runtime.ReadMemStats(&gc1)
	res.OrchestratorCPUSeconds = (self1.CPU() - self0.CPU()).Seconds()
	res.OrchestratorGCs = gc1.NumGC - gc0.NumGC
	if s.emulatorPID > 0 {
		res.EmulatorCPUSeconds = (processCPU(s.emulatorPID) - emu0).Seconds()
	}
	if sys1, err := benchkit.SystemCPU(); err == nil && sys0 > 0 {
		wall := c.exited.Sub(c.started).Seconds()
		other := (sys1 - sys0).Seconds() - u.CPU().Seconds() - res.OrchestratorCPUSeconds - res.EmulatorCPUSeconds
		res.OtherCPUPercent = max(0, 100*other/(wall*float64(runtime.NumCPU())))
	}
	if res.Kind == "baseline" && c.stdout != nil {
		var out struct{ Received int64 }
		if json.Unmarshal(c.stdout.Bytes(), &out) == nil {
			res.Received = out.Received
		}
		if res.Received < int64(s.messages) && runErr == nil {
			runErr = fmt.Errorf("baseline consumer received %d of %d messages", res.Received, s.messages)
		}
	}
	if s.server != nil {
		st := s.server.Stats()
		res.SinkStats = &st
		res.SinkCPUMicrosPerMsg = float64(st.HandlerCPU.Microseconds()) / float64(s.messages)
	}
	return runErr
}

// procCPU returns a process's CPU time so far (0 if pid is 0 or gone).
func processCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	p, err := benchkit.ReadProc(pid)
	if err != nil {
		return 0
	}
	return p.CPU
}

// oneLine summarises a run for the progress output.
func (r *drainResult) oneLine() string {
	if r.Error != "" && !r.Drained {
		return fmt.Sprintf("%-20s FAILED: %s", r.Name, firstLine(r.Error))
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%-20s %9.0f msg/s  %6.2fs  cpu %5.2f us/msg  rss %5.1f MB  stall %4.0f ms  exit %d  other load %2.0f%%",
		r.Name, r.Rate, r.DrainSeconds, r.CPUMicrosPerMsg, r.MaxRSSMB, r.LongestStallMs, r.ExitCode, r.OtherCPUPercent)
	if r.Verification != nil {
		fmt.Fprintf(&sb, "  verify: %s", okText(r.Verification.OK))
	}
	if r.Error != "" {
		fmt.Fprintf(&sb, "  ERROR: %s", firstLine(r.Error))
	}
	return sb.String()
}

func okText(ok bool) string {
	if ok {
		return "ok"
	}
	return "FAILED"
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
