package bench

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// drainsOf returns the runs named base or base-N (the repetitions of one kind of run).
func (r *Report) drainsOf(base string) []drainResult {
	var out []drainResult
	for _, d := range r.Drains {
		if isRepeatOf(d.Name, base) {
			out = append(out, d)
		}
	}
	return out
}

// isRepeatOf reports whether name is base or base-N.
func isRepeatOf(name, base string) bool {
	rest, ok := strings.CutPrefix(name, base)
	return ok && (rest == "" || len(rest) > 1 && rest[0] == '-' && strings.Trim(rest[1:], "0123456789") == "")
}

func medianValue(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fieldOf(runs []drainResult, f func(d drainResult) float64) []float64 {
	var out []float64
	for _, d := range runs {
		if d.Drained {
			out = append(out, f(d))
		}
	}
	return out
}

func maxOf(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	return slices.Max(v)
}

// computeFigures turns the measurements into the table's rows, verdicts and notes.
func computeFigures(r *Report) {
	r.Figures, r.Notes = nil, nil
	base, null := r.drainsOf("baseline"), r.drainsOf("bridge-null")
	baseRate := medianValue(fieldOf(base, func(d drainResult) float64 { return d.Rate }))
	nullRate := medianValue(fieldOf(null, func(d drainResult) float64 { return d.Rate }))
	runs := func(n int) string {
		if n > 1 {
			return fmt.Sprintf(" (median of %d)", n)
		}
		return ""
	}

	// Drain throughput.
	const sd = "drain"
	if len(base) > 0 {
		r.add(sd, "baseline: go-nsq consumer, FIN at once"+runs(len(base)), baseRate, "msg/s", rateText(baseRate), "", "")
		r.add(sd, "baseline CPU per message", medianValue(fieldOf(base, cpuPerMsg)), "us/msg", usText(medianValue(fieldOf(base, cpuPerMsg))), "", "")
		r.add(sd, "baseline peak RSS", maxOf(fieldOf(base, rssOf)), "MB", mbText(maxOf(fieldOf(base, rssOf))), "", "")
		bcs := medianValue(fieldOf(base, func(d drainResult) float64 { return d.CtxSwitchesPerMsg }))
		r.add(sd, "baseline context switches per message", bcs, "", fmt.Sprintf("%.2f", bcs), "", "")
		spreadOf(r, "baseline", fieldOf(base, func(d drainResult) float64 { return d.Rate }))
	}
	if len(null) > 0 {
		r.add(sd, "bridge -> null sink"+runs(len(null)), nullRate, "msg/s", rateText(nullRate), "", "")
		spreadOf(r, "bridge -> null sink", fieldOf(null, func(d drainResult) float64 { return d.Rate }))
		cpu := medianValue(fieldOf(null, cpuPerMsg))
		r.add(sd, "bridge CPU per message (process lifetime)", cpu, "us/msg", usText(cpu), fmt.Sprintf("goal <= %.1f us", targetCPUMicros),
			passIf(cpu <= targetCPUMicros, verdictMiss))
		dcpu := medianValue(fieldOf(null, func(d drainResult) float64 { return d.DrainCPUMicrosPerMsg }))
		r.add(sd, "bridge CPU per message (drain only, /proc)", dcpu, "us/msg", usText(dcpu), "", "")
		if len(base) > 0 {
			own := cpu - medianValue(fieldOf(base, cpuPerMsg))
			r.add(sd, "bridge CPU per message above the baseline's", own, "us/msg", usText(own), "", "")
		}
		cs := medianValue(fieldOf(null, func(d drainResult) float64 { return d.CtxSwitchesPerMsg }))
		r.add(sd, "bridge context switches per message", cs, "", fmt.Sprintf("%.2f", cs), "", "")
		peak := maxOf(fieldOf(null, rssOf))
		r.add(sd, "bridge peak RSS", peak, "MB", mbText(peak), fmt.Sprintf("<= %.0f MB", targetRSSMB), passIf(peak <= targetRSSMB, verdictMiss))
		onceFigure(r, sd, "exact-once at the null sink", null)
		sinkCPU := medianValue(fieldOf(null, func(d drainResult) float64 { return d.SinkCPUMicrosPerMsg }))
		r.add(sd, "null sink CPU per message (the instrument)", sinkCPU, "us/msg", usText(sinkCPU), "", "")
		orch := medianValue(fieldOf(null, func(d drainResult) float64 { return d.OrchestratorCPUSeconds / float64(d.Messages) * 1e6 }))
		r.add(sd, "orchestrator CPU per message (nsqd + sink + poller)", orch, "us/msg", usText(orch), "", "")
		stall := maxOf(fieldOf(null, func(d drainResult) float64 { return d.LongestStallMs }))
		r.add(sd, "longest stall without a FIN (bridge -> null)", stall, "ms", fmt.Sprintf("%.0f ms", stall), "", "")
	}
	if k := r.drainsOf("bridge-null-latency"); len(k) > 0 {
		d := k[0]
		name := "bridge -> null sink answering after " + strings.TrimPrefix(d.Sink, "null+")
		text := rateText(d.Rate)
		if !d.Drained {
			text = "not drained: " + firstLine(d.Error)
		} else if !math.IsNaN(nullRate) {
			text += fmt.Sprintf(" (%.2fx the zero-latency rate)", d.Rate/nullRate)
		}
		r.add(sd, name, d.Rate, "msg/s", text, "", "")
		if br := d.Bridge; br != nil && d.Messages > 0 {
			n := float64(d.Messages) / 1000
			r.add(sd, "  its Kinesis records / PutRecords calls per 1k messages", br.Records/n, "records",
				fmt.Sprintf("%.2f / %.2f", br.Records/n, br.PutCalls/n), "", "")
			r.add(sd, "  its CPU per message", d.CPUMicrosPerMsg, "us/msg", usText(d.CPUMicrosPerMsg), "", "")
		}
		onceFigure(r, sd, "  its exact-once check", k)
	}
	if k := r.drainsOf("bridge-kinesalite"); len(k) > 0 {
		d := k[0]
		r.add(sd, "bridge -> kinesalite", d.Rate, "msg/s", rateText(d.Rate), "", "")
		if len(base) > 0 {
			r.add(sd, "bridge -> kinesalite / baseline", d.Rate/baseRate, "x", fmt.Sprintf("%.2fx", d.Rate/baseRate), "", "")
		}
		r.add(sd, "bridge CPU per message (kinesalite)", d.CPUMicrosPerMsg, "us/msg", usText(d.CPUMicrosPerMsg), "", "")
		r.add(sd, "bridge peak RSS (kinesalite)", d.MaxRSSMB, "MB", mbText(d.MaxRSSMB), fmt.Sprintf("<= %.0f MB", targetRSSMB),
			passIf(d.Drained && d.MaxRSSMB <= targetRSSMB, verdictMiss))
		r.add(sd, "kinesalite CPU per message", d.EmulatorCPUSeconds/float64(d.Messages)*1e6, "us/msg",
			usText(d.EmulatorCPUSeconds/float64(d.Messages)*1e6), "", "")
		if d.Verification != nil {
			onceFigure(r, sd, "exact-once, kinesalite read back", k)
		}
	}
	peakRSSFigure(r)
	shutdownFigure(r)
	nsqFigure(r)
	ratioFigures(r)
	if len(null) > 0 {
		bytesFiguresOf(r, null[0])
	}

	shardFigures(r, nullRate)
	scaleFigures(r)
	latencyFigures(r)
	microFigures(r)
	stageFigures(r)
	observationsOf(r, baseRate)

	r.OK = len(r.Errors) == 0
	for _, f := range r.Figures {
		if f.Verdict == verdictFail {
			r.OK = false
		}
	}
	for _, d := range r.Drains {
		if d.Error != "" {
			r.OK = false
		}
	}
	for _, x := range r.Scaling {
		if x.Error != "" || !x.verified() {
			r.OK = false
		}
	}
}

func cpuPerMsg(d drainResult) float64 { return d.CPUMicrosPerMsg }
func rssOf(d drainResult) float64     { return d.MaxRSSMB }

// spread notes when repeated runs disagree by more than 10%.
func spreadOf(r *Report, what string, v []float64) {
	if len(v) < 2 {
		return
	}
	lo, hi, m := slices.Min(v), slices.Max(v), medianValue(v)
	if (hi-lo)/m > 0.10 {
		r.note("%s: repeated drains varied by %.0f%% (%.0f to %.0f msg/s): the machine is noisy; the median is used", what, 100*(hi-lo)/m, lo, hi)
	}
}

// bytesFigures: Kinesis records and calls per 1k messages, payload and wire bytes per byte read.
func bytesFiguresOf(r *Report, d drainResult) {
	const s = "kinesis"
	if d.Bridge == nil || d.Messages == 0 {
		return
	}
	n := float64(d.Messages)
	br := d.Bridge
	r.add(s, "Kinesis records per 1k messages", br.Records/n*1000, "records", fmt.Sprintf("%.2f", br.Records/n*1000), "", "")
	r.add(s, "PutRecords calls per 1k messages", br.PutCalls/n*1000, "calls", fmt.Sprintf("%.2f", br.PutCalls/n*1000), "", "")
	r.add(s, "user records per Kinesis record (mean)", br.UserRecsPerRec, "", fmt.Sprintf("%.0f", br.UserRecsPerRec), "", "")
	ratio := br.BytesOut / br.BytesIn
	r.add(s, "payload bytes out / bytes in (bridge metrics)", ratio, "", fmt.Sprintf("%.4f", ratio),
		fmt.Sprintf("<= %.2f", targetBytesRatio), passIf(ratio <= targetBytesRatio, verdictMiss))
	if st := d.SinkStats; st != nil && st.UserBytes > 0 {
		sr := float64(st.RecordBytes) / float64(st.UserBytes)
		agree := math.Abs(float64(st.RecordBytes)-br.BytesOut) < 1 && math.Abs(float64(st.UserBytes)-br.BytesIn) < 1 &&
			float64(st.EntriesAccepted) == br.Records
		r.add(s, "payload bytes out / bytes in (null sink's count)", sr, "", fmt.Sprintf("%.4f", sr), "= bridge's", passIf(agree, verdictFail))
		if !agree {
			r.note("%s: the sink counted %d record bytes, %d user bytes, %d records; the bridge %.0f, %.0f, %.0f",
				d.Name, st.RecordBytes, st.UserBytes, st.EntriesAccepted, br.BytesOut, br.BytesIn, br.Records)
		}
		wire := float64(st.BodyBytes) / float64(st.UserBytes)
		r.add(s, "wire bytes (PutRecords JSON bodies) / bytes in", wire, "", fmt.Sprintf("%.3f", wire), "", "")
	}
}

func onceFigure(r *Report, section, name string, runs []drainResult) {
	ok, text := true, ""
	for _, d := range runs {
		if d.Verification == nil {
			ok, text = false, d.Name+": not verified"
			continue
		}
		if !d.Verification.OK {
			ok = false
			r.note("%s: exact-once check failed: %s; %s", d.Name, d.Verification.Summary(), strings.Join(d.Verification.Problems, "; "))
		}
		if text == "" || !d.Verification.OK {
			text = fmt.Sprintf("%d/%d once, %d dup, %d missing, %d out of order", d.Verification.Unique, d.Verification.Expected,
				d.Verification.Duplicates, d.Verification.Missing, d.Verification.OutOfOrder)
		}
	}
	if len(runs) > 1 && ok {
		text += fmt.Sprintf(" (each of %d runs)", len(runs))
	}
	r.add(section, name, math.NaN(), "", text, "every message once, in order", passIf(ok, verdictFail))
}

// peakRSSFigure is the highest peak RSS of any bridge child: throttled, slow or latency runs
// hold more than a fast drain.
func peakRSSFigure(r *Report) {
	peak, at := 0.0, ""
	for _, d := range r.Drains {
		if d.Kind == "bridge" && d.MaxRSSMB > peak && !strings.Contains(d.Name, "compared") {
			peak, at = d.MaxRSSMB, d.Name
		}
	}
	for _, l := range r.Latency {
		if l.MaxRSSMB > peak && !l.Compared {
			peak, at = l.MaxRSSMB, l.Name
		}
	}
	if at != "" {
		r.add("drain", "bridge peak RSS, any run", peak, "MB", fmt.Sprintf("%s (%s)", mbText(peak), at),
			fmt.Sprintf("<= %.0f MB", targetRSSMB), passIf(peak <= targetRSSMB, verdictMiss))
	}
}

func shutdownFigure(r *Report) {
	ok, worst, n := true, 0.0, 0
	for _, d := range r.Drains {
		if d.Kind != "bridge" || !d.Drained {
			continue
		}
		n++
		worst = max(worst, d.ShutdownSeconds)
		if d.ExitCode != 0 {
			ok = false
		}
	}
	for _, l := range r.Latency {
		if l.Published > 0 && l.Behind == 0 {
			n++
			ok = ok && l.ExitCode == 0
		}
	}
	if n > 0 {
		r.add("drain", "bridge graceful shutdown (SIGTERM after drain)", worst, "s", fmt.Sprintf("exit 0 x%d, slowest %.2f s", n, worst),
			"exit 0", passIf(ok, verdictFail))
	}
}

func nsqFigure(r *Report) {
	var req, to uint64
	n := 0
	for _, d := range r.Drains {
		if d.Kind == "bridge" && d.Drained && d.Sink != sinkThrottled {
			req, to, n = req+d.NSQRequeued, to+d.NSQTimedOut, n+1
		}
	}
	if n > 0 {
		r.add("drain", "NSQ requeues + timeouts (unthrottled bridge drains)", float64(req+to), "", fmt.Sprintf("%d + %d", req, to), "0",
			passIf(req+to == 0, verdictMiss))
	}
}

func shardFigures(r *Report, ceiling float64) {
	const s = "shards"
	var runs []drainResult
	for _, d := range r.Drains {
		if d.Sink == sinkThrottled {
			runs = append(runs, d)
		}
	}
	if len(runs) == 0 {
		return
	}
	for i, d := range runs {
		text := rateText(d.Rate)
		var util float64
		if st := d.SinkStats; st != nil && d.DrainSeconds > 0 {
			util = float64(st.RecordBytes) / d.DrainSeconds / (float64(d.Shards) * (1 << 20))
			text += fmt.Sprintf(", %.0f%% of %d x 1 MiB/s, %d throttled", 100*util, d.Shards, st.EntriesThrottled)
		}
		target, verdict := "", ""
		if i > 0 && runs[i-1].Drained && d.Drained {
			prev := runs[i-1].Rate
			want := prev * targetShardGrowth
			if !math.IsNaN(ceiling) {
				want = min(want, targetShardCeiling*ceiling)
			}
			target = fmt.Sprintf(">= %s", rateText(want))
			verdict = passIf(d.Rate >= want, verdictMiss)
		}
		if !d.Drained {
			text, verdict = "not drained: "+firstLine(d.Error), verdictFail
		}
		r.add(s, fmt.Sprintf("%d shard(s), throttled like Kinesis", d.Shards), d.Rate, "msg/s", text, target, verdict)
	}
	onceFigure(r, s, "exact-once through throttling retries", runs)
	if len(runs) > 1 {
		r.note("shard scaling target: each step >= %.1fx the previous rate, or >= %.2fx the unthrottled bridge->null rate (%s), the NSQ-side limit",
			targetShardGrowth, targetShardCeiling, rateText(ceiling))
	}
}

func latencyFigures(r *Report) {
	const s = "latency"
	var null []drainResult
	for _, l := range r.Latency {
		name := fmt.Sprintf("%s msg/s, max-buffered-time %s (%s)", thousands(float64(l.Rate)), l.MaxBufferedTime, l.Sink)
		if l.Compared {
			name += ", compared bridge"
		}
		if l.Error != "" && l.Samples == 0 {
			r.add(s, name, math.NaN(), "", "failed: "+firstLine(l.Error), "", verdictFail)
			continue
		}
		text := fmt.Sprintf("p50 %.1f / p99 %.1f / p99.9 %.1f ms", l.P50, l.P99, l.P999)
		if l.SinkSamples > 0 {
			text += fmt.Sprintf(" (sink: %.0f / %.0f / %.0f)", l.SinkP50, l.SinkP99, l.SinkP999)
		}
		text += fmt.Sprintf(", cpu %.0f%%", l.CPUPercent)
		if l.Behind > 0 {
			text = fmt.Sprintf("FELL BEHIND (%s still queued %s after publishing); of those acked: %s", thousands(float64(l.Behind)), latencyCatchUp, text)
		}
		target, verdict := "", ""
		if l.Rate == targetLatencyRate && l.Sink == sinkNull && !l.Compared {
			limit := l.MaxBufferedMs + targetLatencySlack
			target = fmt.Sprintf("p99 <= %.0f ms", limit)
			verdict = passIf(l.P99 <= limit && l.Behind == 0, verdictMiss)
		}
		r.add(s, name, l.P99, "ms", text, target, verdict)
		if l.Verification != nil {
			null = append(null, drainResult{Name: l.Name, Verification: l.Verification})
		}
		if l.Behind > 0 {
			r.note("%s: the bridge did not keep up with %d msg/s: %d messages were still queued %s after publishing stopped",
				l.Name, l.Rate, l.Behind, latencyCatchUp)
		}
		if l.AchievedRate < 0.95*float64(l.Rate) {
			r.note("%s: the publisher reached only %.0f of %d msg/s: the machine could not keep up", l.Name, l.AchievedRate, l.Rate)
		}
		if l.OtherCPUPercent > 15 {
			r.note("%s: other processes used %.0f%% of the machine's CPU during the run: its figures are disturbed", l.Name, l.OtherCPUPercent)
		}
		if l.Behind == 0 && l.P99 > 5*(l.MaxBufferedMs+targetLatencySlack) {
			r.note("%s: p99 %.0f ms: the bridge fell behind the offered %d msg/s during the run and caught up only after publishing stopped",
				l.Name, l.P99, l.Rate)
		}
		if l.P999 > 3*l.P99 && l.P999 > l.MaxBufferedMs+50 {
			r.note("%s: latency outliers: p99.9 %.0f ms is %.1fx p99", l.Name, l.P999, l.P999/l.P99)
		}
	}
	if len(null) > 0 {
		onceFigure(r, s, "exact-once at the null sink (latency runs)", null)
	}
}

func microFigures(r *Report) {
	if r.Micro == nil {
		return
	}
	const s = "micro"
	for _, b := range r.Micro.Benchmarks {
		text := fmt.Sprintf("%s ns/op", trimFloat(b.NsPerOp))
		if b.BytesPerOp >= 0 {
			text += fmt.Sprintf(", %s B/op, %s allocs/op", trimFloat(b.BytesPerOp), trimFloat(b.AllocsPerOp))
		}
		if b.MBPerSec >= 0 {
			text += fmt.Sprintf(", %s MB/s", trimFloat(b.MBPerSec))
		}
		keys := make([]string, 0, len(b.Metrics))
		for k := range b.Metrics {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			text += fmt.Sprintf(", %s %s", trimFloat(b.Metrics[k]), k)
		}
		r.add(s, filepath.Base(b.Package)+"."+strings.TrimPrefix(b.Name, "Benchmark"), b.NsPerOp, "ns/op", text, "", "")
	}
	for _, p := range r.Micro.Packages {
		found := false
		for _, b := range r.Micro.Benchmarks {
			found = found || b.Package == p
		}
		if !found {
			r.add(s, filepath.Base(p), math.NaN(), "", "no benchmarks in this package", "", "")
		}
	}
}

// observations adds notes about anything that looks off.
func observationsOf(r *Report, baseRate float64) {
	if la := r.Machine.LoadAvg; len(la) > 0 && r.Machine.Cores > 0 && la[0] > float64(r.Machine.Cores)*0.75 {
		r.note("load average %.2f at the start on %d cores: other work competed with the benchmark", la[0], r.Machine.Cores)
	}
	for _, d := range r.Drains {
		if d.Error != "" {
			r.note("%s: %s", d.Name, firstLine(d.Error))
		}
		if !d.Drained {
			continue
		}
		if d.Kind == "bridge" && d.Sink != sinkThrottled && d.LongestStallMs > 250 {
			r.note("%s: no message was FINished for %.0f ms at %.1f s into the drain", d.Name, d.LongestStallMs, d.StallAtSeconds)
		}
		if d.OtherCPUPercent > 15 {
			r.note("%s: other processes used %.0f%% of the machine's CPU during the run: its figures are disturbed", d.Name, d.OtherCPUPercent)
		}
		if d.NSQTimedOut > 0 || d.NSQRequeued > 0 {
			r.note("%s: nsqd counted %d requeues and %d timeouts", d.Name, d.NSQRequeued, d.NSQTimedOut)
		}
		if d.OrchestratorGCs > 0 && d.Messages >= 100_000 {
			r.note("%s: this process (nsqd + sink) ran %d GC cycles during the drain", d.Name, d.OrchestratorGCs)
		}
		if d.Bridge != nil && d.Bridge.DeadLettered > 0 {
			r.note("%s: the bridge dead-lettered %.0f messages (none are bad)", d.Name, d.Bridge.DeadLettered)
		}
		if d.Sink == sinkKinesalite && d.EmulatorCPUSeconds > 0 && d.DrainSeconds > 0 {
			r.note("%s: kinesalite used %.0f%% of a core during the drain (%.1f s CPU), competing with the bridge and nsqd for %d cores", d.Name,
				100*d.EmulatorCPUSeconds/d.DrainSeconds, d.EmulatorCPUSeconds, r.Machine.Cores)
		}
	}
	for _, e := range r.Errors {
		r.note("error: %s", firstLine(e))
	}
}
