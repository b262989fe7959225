package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// Number formatting of the printed table.

func rateText(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return thousands(v) + " msg/s"
}

func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

func usText(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.2f us", v)
}

func mbText(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.1f MB", v)
}

func trimFloat(v float64) string {
	switch {
	case v >= 100:
		return thousands(v)
	case v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// printReport prints the header, the table and the notes.
func printReport(w io.Writer, r *Report) {
	m := r.Machine
	fmt.Fprintf(w, "nsqk bench   %s\n", r.Started.Format(time.RFC3339))
	fmt.Fprintf(w, "machine      %s, %d cores, %.1f GB, %s, %s/%s, kernel %s\n", m.CPUModel, m.Cores, float64(m.MemTotal)/(1<<30),
		m.GoVersion, m.GOOS, m.GOARCH, m.Kernel)
	fmt.Fprintf(w, "load         %v at start, %v at end\n", m.LoadAvg, r.LoadAvgEnd)
	fmt.Fprintln(w, "note         absolute figures (msg/s, us, MB) are this machine's under this load; the [ratios] rows, measured in the same run, carry over to other hosts")
	fmt.Fprintf(w, "command      %s\n", strings.Join(r.Command, " "))
	if bi := r.Build; bi.GitCommit != "" {
		dirty := ""
		if len(bi.GitDirty) > 0 {
			dirty = fmt.Sprintf(" + %d uncommitted changes (%s)", len(bi.GitDirty), strings.Join(bi.GitDirty, ", "))
		}
		fmt.Fprintf(w, "code         %s%s\n", bi.GitCommit, dirty)
	}
	if cb := r.CompareBuild; cb != nil {
		fmt.Fprintf(w, "compared     %s (sha256 %.12s)\n", cb.Path, cb.SHA256)
	}
	if s := r.Messages; s != nil {
		fmt.Fprintf(w, "messages     %s per drain run, avg %.0f bytes, %s users (location JSON, seed %d)\n", thousands(float64(s.Count)), s.AvgBytes,
			thousands(float64(s.Users)), s.Seed)
	}
	if s := r.SmallMessages; s != nil {
		fmt.Fprintf(w, "             %s per shard-scaling run and in the Kinesis-latency drain\n", thousands(float64(s.Count)))
	}
	fmt.Fprintf(w, "settings     max-in-flight %v, max-buffered-time %v (drains), %v shards, %v repeats\n",
		r.Settings["max_in_flight"], r.Settings["max_buffered_time"], r.Settings["shards"], r.Settings["repeat"])
	if len(r.Skipped) > 0 {
		fmt.Fprintf(w, "skipped      %s\n", strings.Join(r.Skipped, ", "))
	}
	fmt.Fprintln(w)
	printBenchTable(w, r.Figures)
	if len(r.Notes) > 0 {
		fmt.Fprintln(w, "\nnotes")
		for _, n := range r.Notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
	}
	if r.Profile != nil {
		fmt.Fprintf(w, "\nprofile (%s): bridge %s, orchestrator %s\n", r.Profile.Method, r.Profile.Bridge, r.Profile.Orchestrator)
		if r.Profile.Inspect != "" {
			fmt.Fprintf(w, "  inspect: %s\n", r.Profile.Inspect)
		}
		for _, l := range r.Profile.Top {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	verdict := "all correctness checks passed"
	if !r.OK {
		verdict = "A CORRECTNESS CHECK FAILED"
	}
	pass, miss := 0, 0
	for _, f := range r.Figures {
		switch f.Verdict {
		case verdictPass:
			pass++
		case verdictMiss:
			miss++
		}
	}
	fmt.Fprintf(w, "\n%s; targets: %d PASS, %d MISS\n", verdict, pass, miss)
}

// printBenchTable prints the figures as an aligned table, one block per section.
func printBenchTable(w io.Writer, figs []Figure) {
	wn, wv, wt := len("figure"), len("value"), len("target")
	for _, f := range figs {
		wn, wv, wt = max(wn, len(f.Name)), max(wv, len(f.Text)), max(wt, len(f.Target))
	}
	wv = min(wv, 90)
	line := strings.Repeat("-", wn+wv+wt+14)
	fmt.Fprintf(w, "%-*s  %-*s  %-*s  %s\n", wn, "figure", wv, "value", wt, "target", "verdict")
	section := ""
	for _, f := range figs {
		if f.Section != section {
			section = f.Section
			fmt.Fprintf(w, "%s\n[%s]\n", line, section)
		}
		fmt.Fprintf(w, "%-*s  %-*s  %-*s  %s\n", wn, f.Name, wv, f.Text, wt, f.Target, f.Verdict)
	}
	fmt.Fprintln(w, line)
}
