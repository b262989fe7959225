package bench

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/nsqio/nsq/nsqd"

	"github.com/nsqk/nsqk/cmd/nsqk/internal/benchkit"
	"github.com/nsqk/nsqk/cmd/nsqk/internal/nullsink"
	"github.com/nsqk/nsqk/cmd/nsqk/internal/promq"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/location"
)

// latencyTick is the publisher's pacing interval.
const latencyTick = 5 * time.Millisecond

// latencyCatchUp is how long a latency run waits for the bridge to finish after publishing stops.
const latencyCatchUp = 30 * time.Second

// latencyResult is one run at a fixed offered rate.
type latencyResult struct {
	Name            string  `json:"name"`
	Sink            string  `json:"sink"`
	Rate            int     `json:"offered_rate"`
	MaxBufferedTime string  `json:"max_buffered_time"`
	MaxBufferedMs   float64 `json:"max_buffered_ms"`
	Seconds         float64 `json:"seconds"`
	WarmupSeconds   float64 `json:"warmup_seconds"`
	Published       int     `json:"published"`
	AchievedRate    float64 `json:"achieved_rate"`
	// The bridge's ack-latency histogram (NSQ publish timestamp to Kinesis acceptance) after the
	// warm-up, quantiles interpolated in its buckets as PromQL does.
	Samples float64 `json:"samples"`
	P50     float64 `json:"p50_ms"`
	P99     float64 `json:"p99_ms"`
	P999    float64 `json:"p999_ms"`
	Mean    float64 `json:"mean_ms"`
	// The null sink's exact distribution of arrival time minus the message's ts field (publish
	// time, millisecond resolution), over messages published after the warm-up: a cross-check
	// of the histogram without bucket interpolation (it ends at the write, not the ack).
	SinkSamples int     `json:"sink_samples,omitempty"`
	SinkP50     float64 `json:"sink_p50_ms,omitempty"`
	SinkP99     float64 `json:"sink_p99_ms,omitempty"`
	SinkP999    float64 `json:"sink_p999_ms,omitempty"`
	SinkMax     float64 `json:"sink_max_ms,omitempty"`
	// The bridge child during the run.
	CPUMicrosPerMsg float64 `json:"cpu_us_per_msg"`
	CPUPercent      float64 `json:"cpu_percent_of_one_core"`
	MaxRSSMB        float64 `json:"max_rss_mb"`
	// Behind is what was still queued latencyCatchUp after publishing stopped: the bridge could
	// not keep up with the offered rate (the percentiles then cover only what it acknowledged).
	Behind          int64                  `json:"behind,omitempty"`
	OtherCPUPercent float64                `json:"other_cpu_percent"`
	ExitCode        int                    `json:"exit_code"`
	Bridge          *bridgeFigures         `json:"bridge,omitempty"`
	Verification    *nullsink.Verification `json:"verification,omitempty"`
	Log             string                 `json:"log"`
	Error           string                 `json:"error,omitempty"`
	// Compared: the --compare-exe bridge.
	Compared bool `json:"compared,omitempty"`
}

// latencyRuns measures NSQ-to-ack latency at each offered rate and max-buffered-time.
func (b *bench) latencyRuns(ctx context.Context, sink string) error {
	rates, _ := b.o.rateList()
	mbts, _ := b.o.mbtList()
	var em *kinesislocal.Emulator
	if sink == sinkKinesalite {
		var err error
		if em, err = kinesislocal.Start(ctx, kinesislocal.Options{}); err != nil {
			return err
		}
		defer em.Close()
	}
	for i, rate := range rates {
		for j, mbt := range mbts {
			if ctx.Err() != nil {
				return nil
			}
			// With --compare-exe, the compared bridge runs right after at the same offered rate
			// (null sink only): at a fixed rate both do the same work in the same batches, so their
			// CPU per message compares without the feedback of a drain (a faster consumer reads
			// and FINs in smaller batches).
			exes := []string{""}
			if b.compareExe != "" && sink == sinkNull {
				exes = append(exes, b.compareExe)
			}
			for _, exe := range exes {
				name := fmt.Sprintf("latency-%s-%d-%s", sink, rate, mbt)
				if exe != "" {
					name += "-compared"
				}
				res := latencyResult{Name: name, Sink: sink, Rate: rate, MaxBufferedTime: mbt.String(), MaxBufferedMs: float64(mbt.Milliseconds()),
					Seconds: b.o.latencyFor.Seconds(), WarmupSeconds: b.o.latencyWarmup.Seconds(), Log: logPath(b.logDir, name), Compared: exe != ""}
				seed := b.o.seed + 100 + uint64(i*len(mbts)+j)
				if err := b.latencyRun(ctx, &res, sink, em, seed, rate, mbt, exe); err != nil {
					res.Error = err.Error()
				}
				b.say("   %s", res.oneLine())
				b.r.Latency = append(b.r.Latency, res)
			}
		}
	}
	return nil
}

func (b *bench) latencyRun(ctx context.Context, res *latencyResult, sink string, em *kinesislocal.Emulator, seed uint64,
	rate int, mbt time.Duration, exe string) error {
	topic := res.Name
	t := b.nsqd.GetTopic(topic)
	t.GetChannel("bridge")
	v := nullsink.NewVerifier(make([]uint64, b.o.users))
	endpoint, stream := "", streamName
	var srv *nullsink.Server
	switch sink {
	case sinkKinesalite:
		stream = fmt.Sprintf("%s-%d", streamName, seed) // one stream per run
		if err := kinesislocal.CreateStream(ctx, em.Client(), stream, int32(b.o.shards)); err != nil {
			return err
		}
		endpoint = em.Endpoint
	default:
		var err error
		if srv, err = nullsink.Start(nullsink.Config{Stream: streamName, Shards: b.o.shards, Verifier: v, Latency: b.o.sinkLatency}); err != nil {
			return err
		}
		defer srv.Close()
		endpoint = srv.URL
	}
	c, err := b.spawnBridge(res.Name, bridgeSpec{topic: topic, channel: "bridge", stream: stream, endpoint: endpoint, maxBuffered: mbt, exe: exe})
	if err != nil {
		return err
	}
	defer c.kill()
	if err := c.waitReady(ctx, 30*time.Second); err != nil {
		return err
	}

	// Publish at the offered rate: every tick, what is due since the start, stamped now.
	gen := location.NewGenerator(b.o.users, seed)
	start := time.Now()
	warmEnd := start.Add(b.o.latencyWarmup)
	end := start.Add(b.o.latencyFor)
	v.RecordLatency(warmEnd)
	var warm promq.Histogram
	warmTaken := false
	emuPID := 0
	if em != nil {
		emuPID = em.Pid()
	}
	cpu0, emu0 := processCPU(c.pid()), processCPU(emuPID)
	self0 := benchkit.SelfUsage()
	sys0, _ := benchkit.SystemCPU()
	tick := time.NewTicker(latencyTick)
	defer tick.Stop()
	sent := 0
	for now := start; now.Before(end); {
		due := int(now.Sub(start).Seconds()*float64(rate)) - sent
		if due > 0 {
			batch := make([]*nsqd.Message, 0, due)
			for range due {
				body, user, seq := gen.Next(nil)
				if n, ok := userIndex(user); ok {
					v.Expect(n, seq)
				}
				batch = append(batch, nsqd.NewMessage(t.GenerateID(), body))
			}
			if err := t.PutMessages(batch); err != nil {
				return err
			}
			sent += due
		}
		if !warmTaken && !now.Before(warmEnd) {
			f, err := c.scrape(ctx)
			if err != nil {
				return fmt.Errorf("warm-up scrape: %w", err)
			}
			warm, warmTaken = f.Histogram("nsqk_bridge_ack_latency_seconds"), true
		}
		if c.hasExited() {
			return fmt.Errorf("%w: %v\n%s", errChildExited, c.waitErr, c.tail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case now = <-tick.C:
		}
	}
	elapsed := time.Since(start)
	res.Published = sent
	res.AchievedRate = float64(sent) / elapsed.Seconds()

	// Drain what is left, then read the histogram. A bridge that fell behind the offered rate is
	// given latencyCatchUp; what it still holds then is reported, not waited for.
	if err := poll(ctx, latencyCatchUp, 5*time.Millisecond, func() bool {
		return remainingOf(b.channelStats(topic, "bridge")) == 0 || c.hasExited()
	}); err != nil && ctx.Err() != nil {
		return err
	}
	if c.hasExited() {
		return fmt.Errorf("%w: %v\n%s", errChildExited, c.waitErr, c.tail())
	}
	var f promq.Families
	if left := remainingOf(b.channelStats(topic, "bridge")); left > 0 {
		res.Behind = left
		if f, err = c.scrape(ctx); err != nil {
			return err
		}
	} else if f, err = c.waitAcked(ctx, int64(sent), 10*time.Second); err != nil {
		return err
	}
	cpu1 := processCPU(c.pid())
	if sys1, err := benchkit.SystemCPU(); err == nil && sys0 > 0 {
		other := (sys1 - sys0 - (cpu1 - cpu0) - (processCPU(emuPID) - emu0) - (benchkit.SelfUsage().CPU() - self0.CPU())).Seconds()
		res.OtherCPUPercent = max(0, 100*other/(time.Since(start).Seconds()*float64(runtime.NumCPU())))
	}
	res.Bridge = bridgeFiguresOf(f)
	h := f.Histogram("nsqk_bridge_ack_latency_seconds").Sub(warm)
	res.Samples = h.Count
	res.P50, res.P99, res.P999, res.Mean = millis(h.Quantile(0.5)), millis(h.Quantile(0.99)), millis(h.Quantile(0.999)), millis(h.Mean())
	wall := time.Since(start)
	code, _, err := c.stop(45 * time.Second)
	res.ExitCode = code
	if res.Behind > 0 {
		// Its shutdown requeued what Kinesis had not accepted in time: not a failure of this run.
		err, code = nil, 0
	}
	u := c.usage()
	res.CPUMicrosPerMsg = float64(u.CPU().Microseconds()) / float64(sent)
	res.CPUPercent = 100 * (cpu1 - cpu0).Seconds() / wall.Seconds()
	res.MaxRSSMB = float64(c.peakRSS()) / (1 << 20)
	if err == nil && code != 0 {
		err = fmt.Errorf("bridge exited with code %d after SIGTERM\n%s", code, c.tail())
	}
	if srv != nil && res.Behind == 0 {
		lat := v.Latencies()
		res.SinkSamples = len(lat)
		if q := benchkit.Percentiles(lat, 0.5, 0.99, 0.999, 1); q != nil {
			res.SinkP50, res.SinkP99, res.SinkP999, res.SinkMax = q[0], q[1], q[2], q[3]
		}
		vr := v.Result()
		res.Verification = &vr
	}
	return err
}

func (r *latencyResult) oneLine() string {
	s := fmt.Sprintf("%-36s offered %6d msg/s (got %6.0f)  p50 %5.1f  p99 %5.1f  p99.9 %5.1f ms", r.Name, r.Rate, r.AchievedRate, r.P50, r.P99, r.P999)
	if r.SinkSamples > 0 {
		s += fmt.Sprintf("  sink p99 %5.1f ms", r.SinkP99)
	}
	s += fmt.Sprintf("  cpu %4.1f%%  %.1f us/msg  other load %2.0f%%", r.CPUPercent, r.CPUMicrosPerMsg, r.OtherCPUPercent)
	if r.Verification != nil {
		s += "  verify: " + okText(r.Verification.OK)
	}
	if r.Behind > 0 {
		s += fmt.Sprintf("  FELL BEHIND: %d messages still queued %s after publishing stopped", r.Behind, latencyCatchUp)
	}
	if r.Error != "" {
		s += "  ERROR: " + firstLine(r.Error)
	}
	return s
}
