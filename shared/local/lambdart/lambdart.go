// Package lambdart runs a Lambda function's own executable (a `provided.al2023` bootstrap, e.g.
// one built from functions/<name>) locally behind a stand-in of the Lambda Runtime API, so that
// the local event source mapping (shared/local/esm) drives the very binary `make lambda`
// deploys. It is a local stand-in for tests and `make dev`, never part of the product.
//
// Each Instance is one execution environment: one process with its own Runtime API endpoint
// (AWS_LAMBDA_RUNTIME_API), started at its first invocation (the cold start). The endpoints are
// the ones aws-lambda-go's runtime client calls (Lambda developer guide, "Using the Lambda
// runtime API for custom runtimes"; aws-lambda-go lambda/runtime_api_client.go):
//
//	GET  /2018-06-01/runtime/invocation/next            the next event, with its request id,
//	                                                    deadline, function ARN and trace id
//	POST /2018-06-01/runtime/invocation/{id}/response   the function's response
//	POST /2018-06-01/runtime/invocation/{id}/error      a function error
//	POST /2018-06-01/runtime/init/error                 a failure during initialization
//
// Outcomes reach the caller of Invoke as they would from an in-process handler
// (lambda.NewHandler(fn).Invoke):
//
//   - a response: returned as is;
//   - a function error after which the runtime asks for the next event: returned as a
//     *FunctionError whose Error() is the message the function returned;
//   - a crash (the process exits during the invocation: a panic, after which aws-lambda-go posts
//     the error and exits, os.Exit, a fatal signal, a failed initialization): Invoke panics with
//     a *FunctionError, as an in-process panic escapes lambda.Handler.Invoke; the esm emulator
//     then throws the instance away and starts a new one ("If the Lambda function crashes or
//     times out during the Invoke phase, Lambda resets the execution environment", "Understanding
//     the Lambda execution environment lifecycle");
//   - the context ends first (the function timeout): the process is killed (Lambda sends SIGKILL
//     at a timeout) and Invoke returns the context's error.
//
// An Instance whose process is gone starts a new one at its next invocation.
package lambdart

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambda/messages"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/nsqk/nsqk/shared/consumer"
)

// Function describes the function the instances run.
type Function struct {
	Name   string // AWS_LAMBDA_FUNCTION_NAME (required)
	Binary string // the executable, e.g. from Build (required)
	// Env is the function's configuration (NSQK_*, AWS_ENDPOINT_URL_* for local stand-ins),
	// "KEY=value" each; it is added to, and overrides, what the Lambda service sets.
	Env      []string
	MemoryMB int    // AWS_LAMBDA_FUNCTION_MEMORY_SIZE; default 128 (Lambda's default)
	Region   string // AWS_REGION; default us-east-1
	// Stdout and Stderr receive the process's output (CloudWatch Logs in AWS: the EMF lines of
	// consumer.Main go to stdout, its logs to stderr); default os.Stderr. Each is written by
	// one instance at a time, whole lines.
	Stdout, Stderr io.Writer
}

// Stats counts what the instances of a Runtime did.
type Stats struct {
	Processes      int64 // processes started (cold starts)
	Invocations    int64
	FunctionErrors int64 // error responses after which the runtime went on
	Crashes        int64 // processes that exited during an invocation
	Timeouts       int64 // processes killed because the invocation's context ended
}

// Runtime starts instances of one function and keeps track of their processes.
type Runtime struct {
	fn             Function
	stdout, stderr *sharedWriter

	mu     sync.Mutex
	procs  map[*process]struct{}
	closed bool

	processes, invocations, functionErrors, crashes, timeouts atomic.Int64
}

// New returns a Runtime for fn. It starts nothing: instances start their process when first
// invoked.
func New(fn Function) (*Runtime, error) {
	if fn.Name == "" || fn.Binary == "" {
		return nil, errors.New("lambdart: Function.Name and Function.Binary are required")
	}
	if _, err := os.Stat(fn.Binary); err != nil {
		return nil, fmt.Errorf("lambdart: %w", err)
	}
	if fn.MemoryMB == 0 {
		fn.MemoryMB = 128
	}
	if fn.Region == "" {
		fn.Region = "us-east-1"
	}
	if fn.Stdout == nil {
		fn.Stdout = os.Stderr
	}
	if fn.Stderr == nil {
		fn.Stderr = os.Stderr
	}
	return &Runtime{fn: fn, stdout: &sharedWriter{w: fn.Stdout}, stderr: &sharedWriter{w: fn.Stderr},
		procs: map[*process]struct{}{}}, nil
}

// NewInstance returns a new execution environment; it has the type of esm.Factory, so that
// esm.New(client, rt.NewInstance, cfg) runs one process per lane. A process lives until it
// crashes, times out or Close ends it: an instance its user drops (esm's InstancePerInvocation
// drops one per invocation) leaves its process idle until Close.
func (r *Runtime) NewInstance() lambda.Handler { return &Instance{rt: r} }

// Stats returns the counts so far.
func (r *Runtime) Stats() Stats {
	return Stats{Processes: r.processes.Load(), Invocations: r.invocations.Load(),
		FunctionErrors: r.functionErrors.Load(), Crashes: r.crashes.Load(), Timeouts: r.timeouts.Load()}
}

// Close kills every process still running; later invocations fail.
func (r *Runtime) Close() error {
	r.mu.Lock()
	r.closed = true
	procs := make([]*process, 0, len(r.procs))
	for p := range r.procs {
		procs = append(procs, p)
	}
	r.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
	return nil
}

// Build compiles the main package in dir (e.g. functions/orders) into the executable out, as
// `make lambda` does but for this machine. It runs `go build` in dir, so dir may be any
// package of a module on this machine, testdata included.
func Build(ctx context.Context, dir, out string) error {
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", abs, ".")
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", dir, err, b)
	}
	return nil
}

// FunctionError is an error the function reported (the errorMessage, errorType and stackTrace
// of the Runtime API's error document), or a crash of its process.
type FunctionError struct {
	Message    string
	Type       string // e.g. "errorString", or "Runtime.ExitError" for a process that exited
	StackTrace []*messages.InvokeResponse_Error_StackFrame
}

func (e *FunctionError) Error() string { return e.Message }

// Instance is one execution environment of a Runtime. It serves one invocation at a time.
type Instance struct {
	rt *Runtime
	mu sync.Mutex
	p  *process
}

// Invoke sends payload to the function's process (starting it if it has none) and returns its
// response; see the package documentation for errors, crashes and timeouts. The request id and
// function ARN are those of the lambdacontext in ctx when there is one; the deadline is ctx's.
func (in *Instance) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	r := in.rt
	r.invocations.Add(1)
	c := &call{payload: payload, result: make(chan result, 1), released: make(chan struct{}), arn: consumer.FunctionARN(r.fn.Name), trace: traceID()}
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		c.id = lc.AwsRequestID
		if lc.InvokedFunctionArn != "" {
			c.arn = lc.InvokedFunctionArn
		}
	}
	if c.id == "" {
		c.id = consumer.NewUUID()
	}
	c.deadline = time.Now().Add(15 * time.Minute) // Lambda's longest timeout, when ctx has none
	if d, ok := ctx.Deadline(); ok {
		c.deadline = d
	}
	if in.p != nil && in.p.gone() {
		in.p = nil
	}
	if in.p == nil {
		p, err := r.start()
		if err != nil {
			return nil, err
		}
		in.p = p
	}
	p := in.p
	out, crash, err := p.invoke(ctx, c)
	switch {
	case crash != nil:
		r.crashes.Add(1)
		in.p = nil
		panic(crash)
	case ctx.Err() != nil && err == ctx.Err():
		r.timeouts.Add(1)
		p.kill()
		in.p = nil
	case err != nil:
		var fe *FunctionError
		if errors.As(err, &fe) {
			r.functionErrors.Add(1)
		}
	}
	return out, err
}

// start starts a process with its own Runtime API endpoint.
func (r *Runtime) start() (*process, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errors.New("lambdart: runtime closed")
	}
	p, err := startProcess(r.fn, r.env, r.stdout, r.stderr)
	if err != nil {
		return nil, err
	}
	r.procs[p] = struct{}{}
	r.processes.Add(1)
	go func() {
		<-p.exited
		r.mu.Lock()
		delete(r.procs, p)
		r.mu.Unlock()
	}()
	return p, nil
}

// env is the environment Lambda gives a provided.al2023 function ("Defined runtime environment
// variables", Lambda developer guide), then fn.Env.
func (r *Runtime) env(api string) []string {
	fn := r.fn
	env := []string{
		"AWS_LAMBDA_RUNTIME_API=" + api,
		"AWS_LAMBDA_FUNCTION_NAME=" + fn.Name,
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=" + strconv.Itoa(fn.MemoryMB),
		"AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/" + fn.Name,
		"AWS_LAMBDA_LOG_STREAM_NAME=" + time.Now().UTC().Format("2006/01/02") + "/[$LATEST]" + randomHex(16),
		"AWS_LAMBDA_INITIALIZATION_TYPE=on-demand",
		"AWS_EXECUTION_ENV=AWS_Lambda_provided.al2023",
		"AWS_REGION=" + fn.Region,
		"AWS_DEFAULT_REGION=" + fn.Region,
		// The execution role's temporary credentials in AWS; local stand-ins take any.
		"AWS_ACCESS_KEY_ID=local",
		"AWS_SECRET_ACCESS_KEY=local",
		"AWS_SESSION_TOKEN=local",
		"_HANDLER=bootstrap",
		"LAMBDA_TASK_ROOT=" + filepath.Dir(fn.Binary),
		"PATH=/usr/local/bin:/usr/bin/:/bin:/opt/bin",
		"TZ=:UTC",
	}
	return append(env, fn.Env...)
}

func randomHex(n int) string {
	b := make([]byte, n/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// traceID is an X-Ray trace header as Lambda passes it (not sampled).
func traceID() string {
	return fmt.Sprintf("Root=1-%08x-%s;Parent=%s;Sampled=0", time.Now().Unix(), randomHex(24), randomHex(16))
}
