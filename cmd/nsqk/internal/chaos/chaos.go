// Package chaos is nsqk's fault suite: it drives the real bridge — in process
// (bridge.New/Run) or as a child process (`nsqk bridge`) — against an embedded nsqd and a Kinesis
// emulator behind a fault-injecting front, injects faults (throttling, 500s, timeouts, resets,
// outages, KMS errors, a deleted stream, reshards, nsqd restarts, SIGTERM, SIGKILL, slow writes,
// redeliveries, bad input, consumer failures) and accounts for every message exactly:
//
//   - what was published is recorded when nsqd acknowledged it (user, per-user seq; bad input by
//     its exact body);
//   - what arrived is read back from the stream with the emulator's GetRecords (or, for reshard
//     cases, in the order a local ESM delivered it to a recording handler), de-aggregated with
//     shared/kpl; dead letters are read from the dead-letter topic; after a fatal exit, what is
//     left in NSQ is drained and counted;
//   - nothing is taken from the bridge's own metrics for the verdict (they appear in the notes).
//
// lost = published good messages neither in the stream nor dead-lettered (nor back in NSQ after a
// fatal exit); duplicated = extra copies in the stream; reordered = a seq read after a higher seq
// of the same user that was not a duplicate. Each case is judged by its rule, printed with it.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/nsqk/nsqk/shared/local/kinesislocal"
)

// Launcher returns the command that runs the bridge program (`nsqk bridge`) with args. The CLI
// re-executes itself (os.Executable() bridge ...); the tests re-execute the test binary.
type Launcher func(args []string) *exec.Cmd

// Config configures a suite run.
type Config struct {
	// Quick runs the quick cases (or the named ones) with shortened fault windows.
	Quick bool
	// Cases selects cases by name (a trailing * matches a prefix); empty = every case (the
	// quick ones with Quick).
	Cases []string
	// Dir receives one folder per case with its logs (bridge, ESM, on-failure files).
	Dir string
	// Bridge launches the bridge program for the process cases; nil skips them (they fail).
	Bridge Launcher
	// Progress receives progress lines; nil = discard.
	Progress io.Writer
	// Revision describes the code under test (recorded in the report).
	Revision string
}

// Case is one fault scenario.
type Case struct {
	Name    string
	Group   string
	Quick   bool   // in the quick suite (nsqk chaos --quick and the Go test)
	Summary string // what it does
	Rule    string // how it is judged (printed with the verdict)
	// KnownIssue marks a case expected to fail until the bridge changes, with the reason. It
	// still runs and is still judged by its rule; the Go test treats it as an expected failure.
	KnownIssue string
	Run        func(ctx context.Context, t *T) error
}

// Check is one judged assertion of a case.
type Check struct {
	Name   string `json:"name"`
	Pass   bool   `json:"pass"`
	Detail string `json:"detail,omitempty"`
}

// Event is a point on a case's timeline.
type Event struct {
	At   float64 `json:"at_s"`
	What string  `json:"what"`
}

// RSSSeries is the resident set size of a child bridge sampled every second.
type RSSSeries struct {
	IntervalS float64 `json:"interval_s"`
	KiB       []int64 `json:"kib"`
	MinKiB    int64   `json:"min_kib"`
	MaxKiB    int64   `json:"max_kib"`
	// Phases names index ranges of KiB (e.g. "outage": [12, 72]).
	Phases map[string][2]int `json:"phases,omitempty"`
}

// Result is the outcome of one case.
type Result struct {
	Name       string `json:"name"`
	Group      string `json:"group"`
	Summary    string `json:"summary"`
	Rule       string `json:"rule"`
	KnownIssue string `json:"known_issue,omitempty"`
	Pass       bool   `json:"pass"`
	Error      string `json:"error,omitempty"` // the harness could not complete the case
	Accounting
	Checks   []Check        `json:"checks"`
	Notes    []string       `json:"notes,omitempty"`
	Timeline []Event        `json:"timeline,omitempty"`
	Metrics  map[string]any `json:"metrics,omitempty"`
	RSS      *RSSSeries     `json:"rss,omitempty"`
	Seconds  float64        `json:"seconds"`
	Dir      string         `json:"dir"`
}

// T is the state of one running case.
type T struct {
	Quick bool
	Dir   string
	env   *Env
	res   *Result
	start time.Time
	log   *slog.Logger
	logf  *os.File

	mu       sync.Mutex
	cleanups []func()
}

// Logf writes a progress line and logs it.
func (t *T) Logf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	t.env.progress("  [%5.1fs] %s: %s", time.Since(t.start).Seconds(), t.res.Name, msg)
	t.log.Info(msg)
}

// Event records a timeline event (and logs it).
func (t *T) Event(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	t.mu.Lock()
	t.res.Timeline = append(t.res.Timeline, Event{At: roundS(time.Since(t.start)), What: msg})
	t.mu.Unlock()
	t.Logf("%s", msg)
}

// Note adds an informational note to the result.
func (t *T) Note(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.res.Notes = append(t.res.Notes, fmt.Sprintf(format, args...))
}

// Check records a judged assertion.
func (t *T) Check(name string, ok bool, format string, args ...any) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.res.Checks = append(t.res.Checks, Check{Name: name, Pass: ok, Detail: fmt.Sprintf(format, args...)})
	return ok
}

// Metric records a value for the report.
func (t *T) Metric(name string, v any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.res.Metrics == nil {
		t.res.Metrics = map[string]any{}
	}
	t.res.Metrics[name] = v
}

// Cleanup registers f to run when the case ends (last registered, first run).
func (t *T) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

// Dur picks the full or the quick value.
func (t *T) Dur(full, quick time.Duration) time.Duration {
	if t.Quick {
		return quick
	}
	return full
}

// N picks the full or the quick value.
func (t *T) N(full, quick int) int {
	if t.Quick {
		return quick
	}
	return full
}

// Logger returns the case's log (a file in its folder).
func (t *T) Logger() *slog.Logger { return t.log }

// Elapsed is the time since the case started.
func (t *T) Elapsed() time.Duration { return time.Since(t.start) }

// errTimeout is returned by WaitFor.
var errTimeout = errors.New("timed out")

// WaitFor polls cond every 20 ms until it holds, ctx ends or timeout passes.
func WaitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%w after %s waiting for %s", errTimeout, timeout, what)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// hold keeps a fault window open for d (the window is the scenario, not synchronisation).
func hold(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func roundS(d time.Duration) float64 {
	return float64(d.Round(100*time.Millisecond)) / float64(time.Second)
}

// Env holds what cases share: the suite configuration and one kinesalite.
type Env struct {
	cfg Config
	mu  sync.Mutex
	kl  *kinesislocal.Emulator
	pmu sync.Mutex
}

// NewEnv returns an environment for running cases; Close it when done.
func NewEnv(cfg Config) *Env {
	if cfg.Dir == "" {
		cfg.Dir = ".chaos"
	}
	return &Env{cfg: cfg}
}

func (e *Env) progress(format string, args ...any) {
	if e.cfg.Progress == nil {
		return
	}
	e.pmu.Lock()
	defer e.pmu.Unlock()
	fmt.Fprintf(e.cfg.Progress, format+"\n", args...)
}

// Kinesalite returns the shared kinesalite, starting it (again, if it died) when needed.
func (e *Env) Kinesalite(ctx context.Context) (*kinesislocal.Emulator, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.kl != nil {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := e.kl.Client().ListStreams(cctx, &kinesis.ListStreamsInput{})
		cancel()
		if err == nil {
			return e.kl, nil
		}
		e.progress("  kinesalite is not answering (%v): restarting it", err)
		e.kl.Close()
		e.kl = nil
	}
	kl, err := kinesislocal.Start(ctx, kinesislocal.Options{})
	if err != nil {
		return nil, err
	}
	e.kl = kl
	return kl, nil
}

// Close stops the shared emulator.
func (e *Env) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.kl != nil {
		e.kl.Close()
		e.kl = nil
	}
}

// RunCase runs one case and judges it.
func (e *Env) RunCase(ctx context.Context, c Case, quick bool) Result {
	res := Result{Name: c.Name, Group: c.Group, Summary: c.Summary, Rule: c.Rule, KnownIssue: c.KnownIssue}
	dir, _ := filepath.Abs(filepath.Join(e.cfg.Dir, c.Name))
	res.Dir = dir
	os.RemoveAll(dir)
	t := &T{Quick: quick, Dir: dir, env: e, res: &res, start: time.Now()}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		res.Error = err.Error()
		return res
	}
	f, err := os.Create(filepath.Join(dir, "case.log"))
	if err != nil {
		res.Error = err.Error()
		return res
	}
	t.logf = f
	t.log = slog.New(slog.NewJSONHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.progress("== %s (%s)", c.Name, c.Summary)
	func() {
		defer func() {
			if v := recover(); v != nil {
				res.Error = fmt.Sprintf("panic: %v\n%s", v, debug.Stack())
			}
		}()
		if err := c.Run(ctx, t); err != nil {
			res.Error = err.Error()
		}
	}()
	t.mu.Lock()
	cl := t.cleanups
	t.cleanups = nil
	t.mu.Unlock()
	for i := len(cl) - 1; i >= 0; i-- {
		cl[i]()
	}
	res.Seconds = roundS(time.Since(t.start))
	res.Pass = res.Error == "" && len(res.Checks) > 0
	for _, ch := range res.Checks {
		if !ch.Pass {
			res.Pass = false
		}
	}
	verdict := "PASS"
	if !res.Pass {
		verdict = "FAIL"
	}
	e.progress("== %s: %s in %.1fs", c.Name, verdict, res.Seconds)
	for _, ch := range res.Checks {
		if !ch.Pass {
			e.progress("     failed check: %s: %s", ch.Name, ch.Detail)
		}
	}
	if res.Error != "" {
		e.progress("     error: %s", res.Error)
	}
	t.log.Info("result", "pass", res.Pass, "checks", res.Checks, "error", res.Error)
	f.Close()
	return res
}

// Select returns the cases to run: those named (a trailing * matches a prefix), else every case,
// or the quick ones when quick.
func Select(all []Case, quick bool, names []string) ([]Case, error) {
	if len(names) == 0 {
		var out []Case
		for _, c := range all {
			if !quick || c.Quick {
				out = append(out, c)
			}
		}
		return out, nil
	}
	var out []Case
	seen := map[string]bool{}
	for _, n := range names {
		found := false
		for _, c := range all {
			match := c.Name == n || (strings.HasSuffix(n, "*") && strings.HasPrefix(c.Name, strings.TrimSuffix(n, "*")))
			if match {
				found = true
				if !seen[c.Name] {
					seen[c.Name] = true
					out = append(out, c)
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("no case %q (nsqk chaos --list shows them)", n)
		}
	}
	return out, nil
}

// Report is a suite run.
type Report struct {
	Started   time.Time `json:"started"`
	Seconds   float64   `json:"seconds"`
	Quick     bool      `json:"quick"`
	Revision  string    `json:"revision,omitempty"`
	GoVersion string    `json:"go_version"`
	CPUs      int       `json:"cpus"`
	LoadStart string    `json:"load_average_start"`
	LoadEnd   string    `json:"load_average_end"`
	Passed    int       `json:"passed"`
	Failed    int       `json:"failed"`
	Cases     []Result  `json:"cases"`
}

// Run runs the selected cases one after another.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cases, err := Select(Cases(), cfg.Quick, cfg.Cases)
	if err != nil {
		return nil, err
	}
	env := NewEnv(cfg)
	defer env.Close()
	rep := &Report{Started: time.Now().UTC(), Quick: cfg.Quick, Revision: cfg.Revision, GoVersion: runtime.Version(), CPUs: runtime.NumCPU(), LoadStart: loadAvg()}
	for _, c := range cases {
		if ctx.Err() != nil {
			break
		}
		cctx, cancel := context.WithTimeout(ctx, 15*time.Minute) // a safety net: every wait has its own deadline
		r := env.RunCase(cctx, c, cfg.Quick)
		cancel()
		rep.Cases = append(rep.Cases, r)
		if r.Pass {
			rep.Passed++
		} else {
			rep.Failed++
		}
	}
	rep.Seconds = roundS(time.Since(rep.Started))
	rep.LoadEnd = loadAvg()
	return rep, ctx.Err()
}

// loadAvg returns the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// lockedWriter serialises writes.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
