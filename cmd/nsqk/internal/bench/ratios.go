package bench

import (
	"fmt"
	"math"
)

// pairRatio is the median over the repetitions of f(a[i]) / f(b[i]): a and b drained the same
// messages one after the other, so each pair saw nearly the same load from the rest of the
// machine, and the ratio of a pair moves less than either figure.
func pairRatio(a, b []drainResult, f func(drainResult) float64) (float64, int) {
	var v []float64
	for i := range min(len(a), len(b)) {
		if a[i].Drained && b[i].Drained && f(b[i]) > 0 {
			v = append(v, f(a[i])/f(b[i]))
		}
	}
	return medianValue(v), len(v)
}

func rateOf(d drainResult) float64 { return d.Rate }

// ratioFigures states the drains against each other: the bridge against the patched baseline
// and against go-nsq as released, and against the --compare-exe bridge. Ratios measured in one
// run carry over to other hosts far better than the absolute figures.
func ratioFigures(r *Report) {
	const s = "ratios"
	base, rel := r.drainsOf("baseline"), r.drainsOf("baseline-released")
	null, cmp := r.drainsOf("bridge-null"), r.drainsOf("bridge-compared")
	row := func(name string, a, b []drainResult) {
		if len(a) == 0 || len(b) == 0 {
			return
		}
		rate, n := pairRatio(a, b, rateOf)
		cpu, _ := pairRatio(a, b, cpuPerMsg)
		if n == 0 {
			return
		}
		of := ""
		if n > 1 {
			of = fmt.Sprintf(" (median of %d interleaved pairs)", n)
		}
		r.add(s, name+": drain rate"+of, rate, "x", fmt.Sprintf("%.2fx", rate), "", "")
		r.add(s, name+": CPU per message"+of, cpu, "x", fmt.Sprintf("%.2fx", cpu), "", "")
	}
	if len(rel) > 0 {
		rate := medianValue(fieldOf(rel, rateOf))
		cpu := medianValue(fieldOf(rel, cpuPerMsg))
		r.add("drain", "go-nsq as released: same consumer, FIN at once"+medianOf(len(rel)), rate, "msg/s", rateText(rate), "", "")
		r.add("drain", "go-nsq as released: CPU per message", cpu, "us/msg", usText(cpu), "", "")
		onceRelease(r, rel)
	}
	if len(cmp) > 0 {
		rate := medianValue(fieldOf(cmp, rateOf))
		cpu := medianValue(fieldOf(cmp, cpuPerMsg))
		r.add("drain", "compared bridge (--compare-exe) -> null sink"+medianOf(len(cmp)), rate, "msg/s", rateText(rate), "", "")
		r.add("drain", "compared bridge CPU per message", cpu, "us/msg", usText(cpu), "", "")
		peak := maxOf(fieldOf(cmp, rssOf))
		r.add("drain", "compared bridge peak RSS", peak, "MB", mbText(peak), "", "")
		onceFigure(r, "drain", "exact-once at the null sink (compared bridge)", cmp)
	}
	row("bridge / patched baseline", null, base)
	row("bridge / go-nsq as released", null, rel)
	row("patched baseline / go-nsq as released", base, rel)
	// A compared latency run follows the run of this bridge it pairs with.
	for i, c := range r.Latency {
		if i == 0 || !c.Compared {
			continue
		}
		l := r.Latency[i-1]
		if !l.Compared && c.Sink == l.Sink && c.Rate == l.Rate && c.MaxBufferedTime == l.MaxBufferedTime && l.CPUMicrosPerMsg > 0 && c.CPUMicrosPerMsg > 0 {
			v := l.CPUMicrosPerMsg / c.CPUMicrosPerMsg
			r.add(s, fmt.Sprintf("bridge / compared bridge: CPU per message at a fixed %s msg/s (max-buffered-time %s)", thousands(float64(l.Rate)), l.MaxBufferedTime),
				v, "x", fmt.Sprintf("%.2fx (%.2f / %.2f us)", v, l.CPUMicrosPerMsg, c.CPUMicrosPerMsg), "", "")
		}
	}
	if len(cmp) > 0 {
		row("bridge / compared bridge", null, cmp)
		if diff := medianValue(fieldOf(null, cpuPerMsg)) - medianValue(fieldOf(cmp, cpuPerMsg)); !math.IsNaN(diff) {
			r.add(s, "bridge CPU per message minus the compared bridge's (medians)", diff, "us/msg", usText(diff), "", "")
		}
	}
}

func medianOf(n int) string {
	if n > 1 {
		return fmt.Sprintf(" (median of %d)", n)
	}
	return ""
}

// onceRelease checks that the released consumer received every message.
func onceRelease(r *Report, runs []drainResult) {
	for _, d := range runs {
		if d.Drained && d.Received < int64(d.Messages) {
			r.note("%s received %d of %d messages", d.Name, d.Received, d.Messages)
		}
	}
}

// stageFigures lists the per-stage breakdown of the profiled drain (and of the compared bridge's).
func stageFigures(r *Report) {
	p := r.Profile
	if p == nil || p.Stages == nil {
		return
	}
	const s = "profile"
	b, c := p.Stages, p.ComparedStages
	name := fmt.Sprintf("bridge CPU in the profile (%s messages)", thousands(float64(b.Messages)))
	text := fmt.Sprintf("%.2f us/msg (%.1f s sampled)", b.MicrosPerMsg, b.CPUSeconds)
	if c != nil {
		text += fmt.Sprintf("; compared bridge %.2f us/msg", c.MicrosPerMsg)
	}
	r.add(s, name, b.MicrosPerMsg, "us/msg", text, "", "")
	for i, st := range b.Stages {
		text := fmt.Sprintf("%.2f us/msg  %4.1f%%", st.MicrosPerMsg, st.Percent)
		if c != nil && i < len(c.Stages) && c.Stages[i].Stage == st.Stage {
			text += fmt.Sprintf("   (compared: %.2f us/msg %4.1f%%)", c.Stages[i].MicrosPerMsg, c.Stages[i].Percent)
		}
		r.add(s, "  "+st.Stage, st.MicrosPerMsg, "us/msg", text, "", "")
	}
}
