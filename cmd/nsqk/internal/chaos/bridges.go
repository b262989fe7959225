package chaos

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nsqk/nsqk/cmd/nsqk/internal/promq"
	"github.com/nsqk/nsqk/shared/bridge"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
)

// InProc is a bridge running in this process (bridge.New + Run).
type InProc struct {
	B      *bridge.Bridge
	Reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// StartBridge starts an in-process bridge with o, writing through the fault front, logging to
// bridge.log in the case folder.
func (r *Rig) StartBridge(o bridge.Options) (*InProc, error) {
	return r.StartBridgeWith(o, r.BridgeKinesis())
}

// StartBridgeWith starts an in-process bridge with its own Kinesis client.
func (r *Rig) StartBridgeWith(o bridge.Options, kc bridge.Kinesis) (*InProc, error) {
	f, err := os.OpenFile(filepath.Join(r.t.Dir, "bridge.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewJSONHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo}))
	reg := prometheus.NewRegistry()
	b, err := bridge.New(o, kc, log, reg)
	if err != nil {
		f.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &InProc{B: b, Reg: reg, cancel: cancel, done: make(chan struct{})}
	go func() {
		p.err = b.Run(ctx)
		close(p.done)
	}()
	r.t.Cleanup(func() {
		cancel()
		<-p.done
		f.Close()
	})
	return p, nil
}

// Stop cancels the bridge (what SIGTERM does) and returns Run's result.
func (p *InProc) Stop(timeout time.Duration) error {
	p.cancel()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("the bridge did not stop within %s", timeout)
	}
}

// Exited reports whether Run returned, and its result.
func (p *InProc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Metrics snapshots the bridge's registry.
func (p *InProc) Metrics() promq.Families {
	f, _ := promq.Gather(p.Reg)
	return f
}

// Child is the bridge program (`nsqk bridge`) running as a child process.
type Child struct {
	Name        string
	MetricsAddr string
	LogPath     string
	cmd         *exec.Cmd
	logf        *os.File
	done        chan struct{}
	state       *os.ProcessState
}

// ChildArgs are the flags every child bridge gets; extra flags follow and may override them.
// With nsqlookupd in the rig the case says how the child finds nsqd (a repeatable address flag
// given here could only be added to, not replaced).
func (r *Rig) ChildArgs(metricsAddr string) []string {
	var nsqd []string
	if r.Lookupd == nil {
		nsqd = []string{"--nsqd-tcp-address", r.NSQ.TCPAddr(), "--nsqd-http-address", r.NSQ.HTTPAddr()}
	}
	return append(nsqd,
		"--topic", r.Topic, "--channel", r.Channel, "--dead-letter-topic", r.DLTopic, "--stream", r.Stream,
		"--metrics-address", metricsAddr, "--max-buffered-time", "50ms", "--backlog-interval", "1s", "--log-level", "info",
	)
}

// StartChild starts the bridge program with the rig's flags plus extra, talking to Kinesis
// through the fault front, and waits until /readyz answers.
func (r *Rig) StartChild(ctx context.Context, name string, extra ...string) (*Child, error) {
	launch := r.t.env.cfg.Bridge
	if launch == nil {
		return nil, errors.New("no bridge launcher configured (process cases need `nsqk bridge`)")
	}
	port, err := kinesislocal.FreePort()
	if err != nil {
		return nil, err
	}
	c := &Child{Name: name, MetricsAddr: "127.0.0.1:" + strconv.Itoa(port), LogPath: filepath.Join(r.t.Dir, name+".log"),
		done: make(chan struct{})}
	cmd := launch(append(r.ChildArgs(c.MetricsAddr), extra...))
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	var clean []string
	for _, kv := range env {
		if strings.HasPrefix(kv, "NSQK_") || strings.HasPrefix(kv, "AWS_") {
			continue // the child is configured by flags and the settings below only
		}
		clean = append(clean, kv)
	}
	endpoint := r.Front.URL
	if r.ChildKinesisURL != "" {
		endpoint = r.ChildKinesisURL
	}
	cmd.Env = append(clean, "AWS_ENDPOINT_URL_KINESIS="+endpoint, "AWS_REGION="+kinesislocal.Region,
		"AWS_ACCESS_KEY_ID=local", "AWS_SECRET_ACCESS_KEY=local", "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
	if c.logf, err = os.Create(c.LogPath); err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = c.logf, c.logf
	// Die with the suite; SIGKILL only this child, never a group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		c.logf.Close()
		return nil, fmt.Errorf("start the bridge program: %w", err)
	}
	c.cmd = cmd
	go func() {
		cmd.Wait()
		c.state = cmd.ProcessState
		c.logf.Close()
		close(c.done)
	}()
	r.t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			cmd.Process.Signal(syscall.SIGKILL)
			<-c.done
		}
	})
	r.t.Event("%s started (pid %d): %s", name, cmd.Process.Pid, strings.Join(extra, " "))
	err = WaitFor(ctx, 60*time.Second, name+" ready", func() bool {
		select {
		case <-c.done:
			return true
		default:
		}
		resp, err := http.Get("http://" + c.MetricsAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if exited, code := c.Exited(); exited {
		return c, fmt.Errorf("%s exited with %d before it was ready: %s", name, code, c.Tail(20))
	}
	return c, err
}

// Pid returns the child's process id.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Signal sends sig to the child.
func (c *Child) Signal(sig syscall.Signal) error { return c.cmd.Process.Signal(sig) }

// Exited reports whether the child exited and its exit code (-1 when killed by a signal).
func (c *Child) Exited() (bool, int) {
	select {
	case <-c.done:
		return true, c.state.ExitCode()
	default:
		return false, 0
	}
}

// Wait waits for the child to exit and returns its exit code.
func (c *Child) Wait(timeout time.Duration) (int, error) {
	select {
	case <-c.done:
		return c.state.ExitCode(), nil
	case <-time.After(timeout):
		return 0, fmt.Errorf("%s did not exit within %s", c.Name, timeout)
	}
}

// Scrape reads the child's /metrics.
func (c *Child) Scrape(ctx context.Context) (promq.Families, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return promq.Scrape(cctx, "http://"+c.MetricsAddr+"/metrics")
}

// RSS returns the child's resident set size in KiB (VmRSS).
func (c *Child) RSS() (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(c.Pid()) + "/status")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "VmRSS:" {
			return strconv.ParseInt(f[1], 10, 64)
		}
	}
	return 0, errors.New("no VmRSS")
}

// Log returns the child's output so far.
func (c *Child) Log() string {
	b, _ := os.ReadFile(c.LogPath)
	return string(b)
}

// Tail returns the last n lines of the child's output.
func (c *Child) Tail(n int) string {
	lines := strings.Split(strings.TrimSpace(c.Log()), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Grep returns the child's log lines containing every one of words.
func (c *Child) Grep(words ...string) []string {
	var out []string
	for _, l := range strings.Split(c.Log(), "\n") {
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(l, w)
		}
		if ok && l != "" {
			out = append(out, l)
		}
	}
	return out
}

// checkNoRace fails the case if a child built with -race reported a data race.
func (t *T) checkNoRace(children ...*Child) {
	for _, c := range children {
		if n := len(c.Grep("WARNING: DATA RACE")); n > 0 {
			t.Check("no data race in "+c.Name, false, "%d race reports in %s", n, c.LogPath)
		}
	}
}

// sampler samples a value every interval until stopped.
type sampler struct {
	mu     sync.Mutex
	values []int64
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

func sample(interval time.Duration, f func() (int64, error)) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if v, err := f(); err == nil {
				s.mu.Lock()
				s.values = append(s.values, v)
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.values)
}

func (s *sampler) finish() []int64 {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.values...)
}
