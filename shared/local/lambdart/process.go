package lambdart

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambda/messages"
)

const apiPrefix = "/2018-06-01/runtime"

// call is one invocation on its way through a process.
type call struct {
	id, arn, trace string
	payload        []byte
	deadline       time.Time
	result         chan result   // the first response or error posted for id
	released       chan struct{} // closed when the runtime asks for the next event after this one
}

type result struct {
	body []byte
	err  *FunctionError
}

// process is one running function executable and the Runtime API endpoint it polls.
type process struct {
	cmd  *exec.Cmd
	srv  *http.Server
	next chan *call // handed to the runtime's GET .../next

	mu      sync.Mutex
	current *call          // the invocation the runtime holds, until it posts its outcome
	last    *call          // the invocation the runtime took last, until its next GET
	taken   int            // invocations the runtime took
	initErr *FunctionError // posted to .../init/error

	exited  chan struct{} // closed when the process has exited
	exitErr error
}

func startProcess(fn Function, env func(api string) []string, stdout, stderr *sharedWriter) (*process, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &process{next: make(chan *call), exited: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+apiPrefix+"/invocation/next", p.handleNext)
	mux.HandleFunc("POST "+apiPrefix+"/invocation/{id}/response", p.handleResponse)
	mux.HandleFunc("POST "+apiPrefix+"/invocation/{id}/error", p.handleError)
	mux.HandleFunc("POST "+apiPrefix+"/init/error", p.handleInitError)
	p.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(ln) //nolint:errcheck // ends with Close

	p.cmd = exec.Command(fn.Binary)
	p.cmd.Env = env(ln.Addr().String())
	lo, le := &lineWriter{out: stdout}, &lineWriter{out: stderr}
	p.cmd.Stdout, p.cmd.Stderr = lo, le
	if err := p.cmd.Start(); err != nil {
		p.srv.Close()
		return nil, fmt.Errorf("lambdart: start %s: %w", fn.Binary, err)
	}
	go func() {
		p.exitErr = p.cmd.Wait() // returns once the output is copied
		lo.flush()
		le.flush()
		close(p.exited)
		p.srv.Close()
	}()
	return p, nil
}

func (p *process) gone() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// kill ends the process the way Lambda ends an environment after a timeout (SIGKILL) and waits
// for it.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// invoke runs c on the process. It returns the response, or a function error the runtime
// survived (err), or a crash, or ctx's error.
func (p *process) invoke(ctx context.Context, c *call) (_ []byte, crash *FunctionError, err error) {
	// Hand the event to the runtime's next GET (the first one is the end of its init phase).
	select {
	case p.next <- c:
	case <-p.exited:
		p.mu.Lock()
		phase := "before asking for the next event"
		if p.taken == 0 {
			phase = "init"
		}
		p.mu.Unlock()
		return nil, p.crash(c, phase), nil
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	var res result
	select {
	case res = <-c.result:
	case <-p.exited:
		select {
		case res = <-c.result: // posted, then exited
			if res.err != nil { // a panic
				return nil, p.crashWith(res.err), nil
			}
		default:
			return nil, p.crash(c, "the invocation"), nil
		}
	case <-ctx.Done():
		select {
		case res = <-c.result: // in before the deadline
		default:
			return nil, nil, ctx.Err()
		}
	}
	if res.err == nil {
		return res.body, nil, nil
	}
	// A function error: aws-lambda-go asks for the next event when it goes on, and exits after
	// posting the error of a panic (lambda/invoke_loop.go, ShouldExit). Whichever comes first
	// tells the two apart.
	select {
	case <-c.released:
		return nil, nil, res.err
	case <-p.exited:
		return nil, p.crashWith(res.err), nil
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

// crash describes a process that exited without posting an error for the invocation, as Lambda
// reports it ("Runtime.ExitError"), with what it posted to init/error if it did.
func (p *process) crash(c *call, phase string) *FunctionError {
	p.mu.Lock()
	initErr := p.initErr
	p.mu.Unlock()
	if initErr != nil {
		return initErr
	}
	return &FunctionError{Type: "Runtime.ExitError",
		Message: fmt.Sprintf("RequestId: %s Error: Runtime exited during %s: %v", c.id, phase, p.exitErr)}
}

func (p *process) crashWith(e *FunctionError) *FunctionError {
	return &FunctionError{Type: e.Type, Message: fmt.Sprintf("%s (the runtime exited: %v)", e.Message, p.exitErr), StackTrace: e.StackTrace}
}

func (p *process) handleNext(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if p.last != nil {
		close(p.last.released)
		p.last = nil
	}
	p.mu.Unlock()
	var c *call
	select {
	case c = <-p.next:
	case <-p.exited:
		return
	case <-r.Context().Done():
		return
	}
	p.mu.Lock()
	p.current, p.last = c, c
	p.taken++
	p.mu.Unlock()
	h := w.Header()
	h.Set("Lambda-Runtime-Aws-Request-Id", c.id)
	h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(c.deadline.UnixMilli(), 10))
	h.Set("Lambda-Runtime-Invoked-Function-Arn", c.arn)
	h.Set("Lambda-Runtime-Trace-Id", c.trace)
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(c.payload)
}

// callFor returns the invocation the runtime holds if its id is id.
func (p *process) callFor(w http.ResponseWriter, r *http.Request) *call {
	p.mu.Lock()
	c := p.current
	p.mu.Unlock()
	if c == nil || c.id != r.PathValue("id") {
		apiError(w, http.StatusBadRequest, "InvalidRequestID", "no invocation in progress with id "+r.PathValue("id"))
		return nil
	}
	return c
}

func (p *process) handleResponse(w http.ResponseWriter, r *http.Request) {
	c := p.callFor(w, r)
	if c == nil {
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		apiError(w, http.StatusBadRequest, "InvalidRequest", err.Error())
		return
	}
	// A response streamed with an error trailer is a function error (runtime_api_client.go).
	if t := r.Trailer.Get("Lambda-Runtime-Function-Error-Type"); t != "" {
		p.complete(w, c, result{err: errorDocument(r.Trailer.Get("Lambda-Runtime-Function-Error-Body"), t)})
		return
	}
	p.complete(w, c, result{body: body})
}

func (p *process) handleError(w http.ResponseWriter, r *http.Request) {
	c := p.callFor(w, r)
	if c == nil {
		return
	}
	body, _ := io.ReadAll(r.Body)
	p.complete(w, c, result{err: errorDocument(string(body), r.Header.Get("Lambda-Runtime-Function-Error-Type"))})
}

func (p *process) handleInitError(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	e := errorDocument(string(body), r.Header.Get("Lambda-Runtime-Function-Error-Type"))
	p.mu.Lock()
	p.initErr = e
	p.mu.Unlock()
	accepted(w)
}

// complete records the outcome of c; the Runtime API accepts one per invocation.
func (p *process) complete(w http.ResponseWriter, c *call, res result) {
	p.mu.Lock()
	if p.current != c {
		p.mu.Unlock()
		apiError(w, http.StatusBadRequest, "InvalidStateTransition", "invocation "+c.id+" already completed")
		return
	}
	p.current = nil
	p.mu.Unlock()
	c.result <- res
	accepted(w)
}

// errorDocument reads the error JSON a runtime posts ({"errorMessage", "errorType",
// "stackTrace"}); anything else is kept whole as the message.
func errorDocument(body, typ string) *FunctionError {
	var doc messages.InvokeResponse_Error
	if err := json.Unmarshal([]byte(body), &doc); err == nil && (doc.Message != "" || doc.Type != "") {
		return &FunctionError{Message: doc.Message, Type: doc.Type, StackTrace: doc.StackTrace}
	}
	if typ == "" {
		typ = "Unhandled"
	}
	return &FunctionError{Message: body, Type: typ}
}

func accepted(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write([]byte(`{"status":"OK"}`))
}

func apiError(w http.ResponseWriter, code int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	b, _ := json.Marshal(map[string]string{"errorType": typ, "errorMessage": msg})
	_, _ = w.Write(b)
}

// lineWriter passes one process's output on to a writer shared by all instances, whole lines
// at a time, so that the output of concurrent instances does not interleave within a line.
type lineWriter struct {
	out *sharedWriter
	buf []byte // written by the one goroutine copying the process's output
}

type sharedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) Write(b []byte) (int, error) {
	l.buf = append(l.buf, b...)
	if i := bytes.LastIndexByte(l.buf, '\n'); i >= 0 {
		l.out.mu.Lock()
		_, err := l.out.w.Write(l.buf[:i+1])
		l.out.mu.Unlock()
		l.buf = append(l.buf[:0], l.buf[i+1:]...)
		if err != nil {
			return len(b), err
		}
	}
	return len(b), nil
}

// flush writes an unfinished last line; called once the process has exited.
func (l *lineWriter) flush() {
	if len(l.buf) > 0 {
		l.buf = append(l.buf, '\n')
		_, _ = l.Write(nil)
	}
}
