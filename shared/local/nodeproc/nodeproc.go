// Package nodeproc runs the local stand-ins that come from the pinned npm tooling (kinesalite,
// kinesis-mock, dynalite, fauxqs) as child processes: it finds _tools/node_modules, picks free
// ports, starts a program in its own process group that dies with the caller, waits until the
// program answers, and kills the whole group on Close.
//
// Local environment: tests and `nsqk dev` use this; product code never does.
package nodeproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// ToolsDir finds the directory holding the pinned node_modules: $NSQK_NODE_TOOLS, or the first
// `_tools` folder with a node_modules directory found walking up from the working directory.
func ToolsDir() (string, error) {
	if d := os.Getenv("NSQK_NODE_TOOLS"); d != "" {
		return d, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		cand := filepath.Join(dir, "_tools")
		if st, err := os.Stat(filepath.Join(cand, "node_modules")); err == nil && st.IsDir() {
			return cand, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("_tools/node_modules not found above the working directory; run `make tools` (or set NSQK_NODE_TOOLS)")
		}
		dir = parent
	}
}

// Script returns the path of a file inside a package of the pinned node_modules, and an error
// that says to run `make tools` when it is missing.
func Script(pkg string, path ...string) (string, error) {
	tools, err := ToolsDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(append([]string{tools, "node_modules", pkg}, path...)...)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s missing; run `make tools`: %w", p, err)
	}
	return p, nil
}

// FreePort returns a TCP port that was free a moment ago on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Proc is a running child process.
type Proc struct {
	name    string
	cmd     *exec.Cmd
	waitErr chan error
	once    sync.Once
}

// Start starts cmd (its own process group, killed if the caller dies) and calls ready every
// 50 ms until it returns nil, the process exits, or timeout passes. name is used in errors.
func Start(ctx context.Context, name string, cmd *exec.Cmd, timeout time.Duration, ready func(context.Context) error) (*Proc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w (is node installed?)", name, err)
	}
	p := &Proc{name: name, cmd: cmd, waitErr: make(chan error, 1)}
	go func() { p.waitErr <- cmd.Wait() }()
	if err := p.waitReady(ctx, timeout, ready); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func (p *Proc) waitReady(ctx context.Context, timeout time.Duration, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		err := ready(rctx)
		rcancel()
		if err == nil {
			return nil
		}
		select {
		case werr := <-p.waitErr:
			p.waitErr <- werr
			return fmt.Errorf("%s exited before it was ready: %v", p.name, werr)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %v", p.name, timeout, err)
		case <-tick.C:
		}
	}
}

// Pid returns the process id (for stopping and continuing it in fault tests).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Close kills the process group and waits for the process.
func (p *Proc) Close() error {
	p.once.Do(func() {
		if p.cmd.Process != nil {
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		}
		<-p.waitErr
	})
	return nil
}

// Region is the region every local client uses.
const Region = "us-east-1"

// Endpoint returns port, or a free one when port is 0, and the HTTP endpoint on 127.0.0.1 for it.
func Endpoint(port int) (int, string, error) {
	if port == 0 {
		var err error
		if port, err = FreePort(); err != nil {
			return 0, "", err
		}
	}
	return port, fmt.Sprintf("http://127.0.0.1:%d", port), nil
}

// AWSConfig is the SDK configuration of a client of a local stand-in: static credentials (the
// stand-ins need an Authorization header but accept any) and Region.
func AWSConfig() aws.Config {
	return aws.Config{Region: Region, Credentials: credentials.NewStaticCredentialsProvider("local", "local", "")}
}

// Options configures the start of a stand-in.
type Options struct {
	// Port to listen on; default a free port.
	Port int
	// Stdout/Stderr receive the program's output; default discarded.
	Stdout, Stderr *os.File
	// StartTimeout bounds waiting for the program to answer; each stand-in has its default.
	StartTimeout time.Duration
}

// Until calls done every 20 ms until it reports true or an error, or ctx ends; what names the
// awaited state in the error.
func Until(ctx context.Context, what string, done func(context.Context) (bool, error)) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := done(ctx)
		if ok || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}
