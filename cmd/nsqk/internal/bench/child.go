package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nsqk/nsqk/cmd/nsqk/internal/benchkit"
	"github.com/nsqk/nsqk/cmd/nsqk/internal/nullsink"
	"github.com/nsqk/nsqk/cmd/nsqk/internal/promq"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
)

// child is a measured process: this program re-executed as `nsqk bridge ...` or
// `nsqk bench baseline ...`.
type childProc struct {
	name    string
	cmd     *exec.Cmd
	logFile *os.File
	stdout  *bytes.Buffer
	started time.Time
	done    chan struct{}
	waitErr error
	exited  time.Time
	metrics string       // http://127.0.0.1:PORT of a bridge's /metrics, /readyz
	hwm     atomic.Int64 // highest VmHWM seen, bytes
}

// hwmInterval is how often a child's VmHWM is read (its peak RSS so far).
const hwmInterval = 20 * time.Millisecond

// watchHWM keeps the highest VmHWM of the child until it exits. The peak RSS has to come from
// /proc: ru_maxrss of a child started by Go includes this process's RSS, because Linux carries
// the high-water mark of the parent's memory, which the child shares between clone(CLONE_VM |
// CLONE_VFORK) and exec, into the child's rusage. Only the last hwmInterval before the exit is
// not observed.
func (c *childProc) watchHWM() {
	t := time.NewTicker(hwmInterval)
	defer t.Stop()
	for {
		if p, err := benchkit.ReadProc(c.pid()); err == nil && p.HWM > c.hwm.Load() {
			c.hwm.Store(p.HWM)
		}
		select {
		case <-c.done:
			return
		case <-t.C:
		}
	}
}

// peakRSS returns the highest VmHWM observed, in bytes.
func (c *childProc) peakRSS() int64 { return c.hwm.Load() }

// childEnv is the environment of every child: ours without NSQK_* and AWS_* (a developer's
// settings must not change what is measured), then extra.
func (b *bench) childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "NSQK_") || strings.HasPrefix(kv, "AWS_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, b.o.childEnv...)
	return append(env, extra...)
}

// awsEnv points a bridge child's AWS SDK at endpoint with static credentials and no shared
// config files.
func (b *bench) awsEnv(endpoint string) []string {
	empty := filepath.Join(b.logDir, "aws-empty-config")
	os.WriteFile(empty, nil, 0o644)
	return []string{
		"AWS_ENDPOINT_URL_KINESIS=" + endpoint, "AWS_REGION=" + nullsink.Region,
		"AWS_ACCESS_KEY_ID=bench", "AWS_SECRET_ACCESS_KEY=bench", "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + empty, "AWS_SHARED_CREDENTIALS_FILE=" + empty,
	}
}

// spawn starts a child whose stdout and stderr go to <logDir>/<name>.log (stdout is also kept
// in memory when keepStdout).
func (b *bench) spawn(name, exe string, args, env []string, keepStdout bool) (*childProc, error) {
	f, err := os.Create(logPath(b.logDir, name))
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "# %s %s\n", exe, strings.Join(args, " "))
	c := &childProc{name: name, logFile: f, done: make(chan struct{})}
	cmd := exec.Command(exe, args...)
	cmd.Env = env
	cmd.Stderr = f
	cmd.Stdout = f
	if keepStdout {
		c.stdout = &bytes.Buffer{}
		cmd.Stdout = io.MultiWriter(f, c.stdout)
	}
	// The child dies with the benchmark, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c.cmd = cmd
	c.started = time.Now()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go c.watchHWM()
	go func() {
		c.waitErr = cmd.Wait()
		c.exited = time.Now()
		f.Close()
		close(c.done)
	}()
	return c, nil
}

func (c *childProc) pid() int { return c.cmd.Process.Pid }

func (c *childProc) hasExited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits for the exit (SIGKILL after timeout). It returns the exit code
// (-1 if killed by a signal) and how long the shutdown took.
func (c *childProc) stop(timeout time.Duration) (int, time.Duration, error) {
	t0 := time.Now()
	if !c.hasExited() {
		c.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-c.done:
	case <-time.After(timeout):
		c.cmd.Process.Kill()
		<-c.done
		return -1, time.Since(t0), fmt.Errorf("%s did not exit within %s of SIGTERM; killed", c.name, timeout)
	}
	return c.cmd.ProcessState.ExitCode(), c.exited.Sub(t0), nil
}

// kill ends a child that is no longer wanted (after a failure).
func (c *childProc) kill() {
	if c != nil && !c.hasExited() {
		c.cmd.Process.Kill()
		<-c.done
	}
}

func (c *childProc) usage() benchkit.Usage {
	u, _ := benchkit.ChildUsage(c.cmd.ProcessState)
	return u
}

// tail returns the end of the child's log, for error messages.
func (c *childProc) tail() string {
	b, err := os.ReadFile(c.logFile.Name())
	if err != nil {
		return ""
	}
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return strings.TrimSpace(string(b))
}

// bridgeSpec is one bridge child's configuration.
type bridgeSpec struct {
	topic, channel string
	stream         string // default streamName
	endpoint       string // Kinesis endpoint URL
	maxBuffered    time.Duration
	extra          []string
	exe            string // default: the nsqk under test
}

// spawnBridge starts `nsqk bridge` with the benchmark's settings and a free metrics port.
func (b *bench) spawnBridge(name string, s bridgeSpec) (*childProc, error) {
	port, err := kinesislocal.FreePort()
	if err != nil {
		return nil, err
	}
	mbt := s.maxBuffered
	if mbt == 0 {
		mbt = b.o.maxBuffered
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	stream := s.stream
	if stream == "" {
		stream = streamName
	}
	args := []string{"bridge",
		"--nsqd-tcp-address", b.nsqd.TCPAddr, "--nsqd-http-address", b.nsqd.HTTPAddr,
		"--topic", s.topic, "--channel", s.channel, "--stream", stream,
		"--max-in-flight", strconv.Itoa(b.o.maxInFlight), "--max-buffered-time", mbt.String(),
		"--metrics-address", addr, "--log-level", "warn"}
	args = append(args, strings.Fields(b.o.bridgeArgs)...)
	args = append(args, s.extra...)
	exe := s.exe
	if exe == "" {
		exe = b.exe
	}
	c, err := b.spawn(name, exe, args, b.childEnv(b.awsEnv(s.endpoint)...), false)
	if err != nil {
		return nil, err
	}
	c.metrics = "http://" + addr
	return c, nil
}

// spawnBaseline starts the physical-limit consumer: `nsqk bench baseline` (patched go-nsq), or,
// when released, the consumer built against go-nsq as released (--released-baseline).
func (b *bench) spawnBaseline(name, topic, channel string, released bool) (*childProc, error) {
	exe, args := b.exe, []string{"bench", "baseline"}
	if released {
		exe, args = b.releasedExe, nil
	}
	args = append(args, "--nsqd-tcp-address", b.nsqd.TCPAddr, "--topic", topic, "--channel", channel,
		"--max-in-flight", strconv.Itoa(b.o.maxInFlight))
	return b.spawn(name, exe, args, b.childEnv(), true)
}

// scrape reads a bridge child's metrics.
func (c *childProc) scrape(ctx context.Context) (promq.Families, error) {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return promq.Scrape(sctx, c.metrics+"/metrics")
}

// waitReady polls a bridge child's /readyz.
func (c *childProc) waitReady(ctx context.Context, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	ok := func() bool {
		resp, err := client.Get(c.metrics + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	err := poll(ctx, timeout, 10*time.Millisecond, func() bool { return c.hasExited() || ok() })
	if c.hasExited() {
		return fmt.Errorf("%s exited before it was ready: %v\n%s", c.name, c.waitErr, c.tail())
	}
	return err
}

// waitAcked scrapes until the bridge has acknowledged n messages (the FIN reaches nsqd before the
// counter is incremented, so right after a drain the counter may lag for a moment).
func (c *childProc) waitAcked(ctx context.Context, n int64, timeout time.Duration) (promq.Families, error) {
	var f promq.Families
	var err error
	perr := poll(ctx, timeout, 5*time.Millisecond, func() bool {
		f, err = c.scrape(ctx)
		return err == nil && int64(f.Value("nsqk_bridge_messages_acked_total")) >= n
	})
	if err != nil {
		return f, err
	}
	if perr != nil {
		return f, fmt.Errorf("bridge acknowledged %.0f of %d messages: %w", f.Value("nsqk_bridge_messages_acked_total"), n, perr)
	}
	return f, nil
}

// bridgeFigures are the bridge's own counters at the end of a run.
type bridgeFigures struct {
	MessagesIn     float64            `json:"messages_in"`
	Acked          float64            `json:"acked"`
	BytesIn        float64            `json:"bytes_in"`
	BytesOut       float64            `json:"bytes_out"`
	Records        float64            `json:"kinesis_records"` // aggregates accepted
	PutCalls       float64            `json:"putrecords_calls"`
	PutOutcomes    map[string]float64 `json:"putrecords_outcomes"`
	PutEntries     float64            `json:"putrecords_entries"`
	FailedEntries  map[string]float64 `json:"failed_entries,omitempty"`
	Retries        float64            `json:"retries"`
	Touches        float64            `json:"touches"`
	DeadLettered   float64            `json:"dead_lettered"`
	Requeued       map[string]float64 `json:"requeued,omitempty"`
	Misrouted      float64            `json:"misrouted"`
	UserRecsPerRec float64            `json:"user_records_per_record"`
	PutLatencyP50  float64            `json:"putrecords_latency_p50_ms"`
	PutLatencyP99  float64            `json:"putrecords_latency_p99_ms"`
	AckLatencyP50  float64            `json:"ack_latency_p50_ms"`
	AckLatencyP99  float64            `json:"ack_latency_p99_ms"`
	GoGCCycles     float64            `json:"go_gc_cycles"`
	HeapBytes      float64            `json:"go_heap_inuse_bytes"`
}

func bridgeFiguresOf(f promq.Families) *bridgeFigures {
	put := f.Histogram("nsqk_bridge_putrecords_latency_seconds")
	ack := f.Histogram("nsqk_bridge_ack_latency_seconds")
	recs := f.Histogram("nsqk_bridge_user_records_per_aggregate")
	return &bridgeFigures{
		MessagesIn: f.Value("nsqk_bridge_messages_in_total"), Acked: f.Value("nsqk_bridge_messages_acked_total"),
		BytesIn: f.Value("nsqk_bridge_bytes_in_total"), BytesOut: f.Value("nsqk_bridge_bytes_out_total"),
		Records: f.Value("nsqk_bridge_aggregates_total"), PutCalls: f.Value("nsqk_bridge_putrecords_calls_total"),
		PutOutcomes:   f.ByLabel("nsqk_bridge_putrecords_calls_total", "outcome"),
		PutEntries:    f.Value("nsqk_bridge_putrecords_entries_total"),
		FailedEntries: nonEmpty(f.ByLabel("nsqk_bridge_putrecords_failed_entries_total", "code")),
		Retries:       f.Value("nsqk_bridge_retries_total"), Touches: f.Value("nsqk_bridge_touches_total"),
		DeadLettered:   f.Value("nsqk_bridge_dead_lettered_total"),
		Requeued:       nonEmpty(f.ByLabel("nsqk_bridge_messages_requeued_total", "cause")),
		Misrouted:      f.Value("nsqk_bridge_misrouted_entries_total"),
		UserRecsPerRec: finite(recs.Mean()), PutLatencyP50: millis(put.Quantile(0.5)), PutLatencyP99: millis(put.Quantile(0.99)),
		AckLatencyP50: millis(ack.Quantile(0.5)), AckLatencyP99: millis(ack.Quantile(0.99)),
		GoGCCycles: gcCycles(f), HeapBytes: f.Value("go_memstats_heap_inuse_bytes"),
	}
}

func gcCycles(f promq.Families) float64 {
	if mf := f["go_gc_duration_seconds"]; mf != nil {
		for _, m := range mf.GetMetric() {
			if s := m.GetSummary(); s != nil {
				return float64(s.GetSampleCount())
			}
		}
	}
	return 0
}

func nonEmpty(m map[string]float64) map[string]float64 {
	if len(m) == 0 {
		return nil
	}
	return m
}

// ms converts seconds to milliseconds; NaN (no data) becomes 0 (JSON has no NaN).
func millis(sec float64) float64 { return finite(sec * 1000) }

func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

var errChildExited = errors.New("child exited during the run")
