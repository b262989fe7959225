package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
)

// Cases returns every case of the suite, in the order they run.
func Cases() []Case {
	var all []Case
	all = append(all, kinesisCases()...)
	all = append(all, reshardCases()...)
	all = append(all, processCases()...)
	all = append(all, redriveCases()...)
	all = append(all, backlogCases()...)
	all = append(all, inputCases()...)
	all = append(all, consumerCases()...)
	all = append(all, esmCases()...)
	all = append(all, durableCases()...)
	all = append(all, memoryCases()...)
	all = append(all, datapathCases()...)
	all = append(all, safetyCases()...)
	all = append(all, routesCases()...)
	return all
}

// Verdict is PASS or FAIL, with "(known issue)" for a failing case marked as such.
func (r *Result) Verdict() string {
	switch {
	case r.Pass && r.KnownIssue != "":
		return "PASS (known issue fixed?)"
	case r.Pass:
		return "PASS"
	case r.KnownIssue != "":
		return "FAIL (known issue)"
	}
	return "FAIL"
}

// DeadLetterSummary is "total (reason=n, ...)".
func (r *Result) DeadLetterSummary() string {
	total := r.DeadLetterTotal()
	if total == 0 {
		return "0"
	}
	keys := make([]string, 0, len(r.DeadLettered))
	for k := range r.DeadLettered {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, r.DeadLettered[k]))
	}
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
}

// WriteTable prints one row per case, then each case's rule, failed checks and notes.
func (rep *Report) WriteTable(w io.Writer, verbose bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	width := len("case")
	for _, r := range rep.Cases {
		width = max(width, len(r.Name))
	}
	fmt.Fprintf(tw, "%-*s\tpublished\tdelivered\tduplicated\tlost\treordered\tdead-lettered\ttime\tresult\t\n", width, "case")
	for _, r := range rep.Cases {
		pub := fmt.Sprint(r.Published)
		if r.PublishedBad > 0 {
			pub = fmt.Sprintf("%d (%d bad)", r.Published, r.PublishedBad)
		}
		fmt.Fprintf(tw, "%-*s\t%s\t%d\t%d\t%d\t%d\t%d\t%.0fs\t%s\t\n", width, r.Name, pub, r.Delivered, r.Duplicated, r.Lost, r.Reordered,
			r.DeadLetterTotal(), r.Seconds, r.Verdict())
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d passed, %d failed in %.0fs (quick=%v, %d CPUs, load %s -> %s)\n", rep.Passed, rep.Failed, rep.Seconds, rep.Quick,
		rep.CPUs, rep.LoadStart, rep.LoadEnd)
	if rep.Revision != "" {
		fmt.Fprintf(w, "code under test: %s\n", rep.Revision)
	}
	for _, r := range rep.Cases {
		fmt.Fprintf(w, "\n%s: %s\n  rule: %s\n", r.Name, r.Verdict(), r.Rule)
		if r.KnownIssue != "" {
			fmt.Fprintf(w, "  known issue: %s\n", r.KnownIssue)
		}
		if r.DeadLetterTotal() > 0 {
			fmt.Fprintf(w, "  dead-lettered: %s\n", r.DeadLetterSummary())
		}
		if r.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", r.Error)
		}
		for _, c := range r.Checks {
			if !c.Pass {
				fmt.Fprintf(w, "  FAILED %s: %s\n", c.Name, c.Detail)
			} else if verbose {
				fmt.Fprintf(w, "  ok %s: %s\n", c.Name, c.Detail)
			}
		}
		if r.RSS != nil {
			fmt.Fprintf(w, "  rss: %d..%d MiB over %d samples (1/s)\n", r.RSS.MinKiB>>10, r.RSS.MaxKiB>>10, len(r.RSS.KiB))
		}
		if verbose || !r.Pass {
			for _, n := range r.Notes {
				fmt.Fprintf(w, "  note: %s\n", n)
			}
			fmt.Fprintf(w, "  logs: %s\n", r.Dir)
		}
	}
}

// WriteJSON writes the report as indented JSON, creating the folder.
func (rep *Report) WriteJSON(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
