package lambdart

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// fn builds testdata/fn once per test binary (the go build cache keeps it fast).
func fn(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lambdart-test")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "bootstrap")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		buildErr = Build(ctx, "testdata/fn", binary)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binary != "" {
		os.RemoveAll(filepath.Dir(binary))
	}
	os.Exit(code)
}

type response struct {
	PID         int    `json:"pid"`
	Count       int64  `json:"count"`
	RequestID   string `json:"request_id"`
	ARN         string `json:"arn"`
	Function    string `json:"function"`
	HasDeadline bool   `json:"has_deadline"`
}

func newRuntime(t *testing.T) (*Runtime, *strings.Builder) {
	t.Helper()
	var logs strings.Builder
	var mu sync.Mutex
	rt, err := New(Function{Name: "test-fn", Binary: fn(t), Stdout: lockedBuilder{&mu, &logs}, Stderr: lockedBuilder{&mu, &logs}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt, &logs
}

type lockedBuilder struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (l lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func invoke(t *testing.T, h lambda.Handler, ctx context.Context, do string) (response, error) {
	t.Helper()
	out, err := h.Invoke(ctx, []byte(`{"do":"`+do+`"}`))
	var r response
	if err == nil {
		if jerr := json.Unmarshal(out, &r); jerr != nil {
			t.Fatalf("response %q: %v", out, jerr)
		}
	}
	return r, err
}

func withTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// The process is started at the first invocation and serves the next ones warm; the invocation's
// request id, function ARN and deadline reach the handler through aws-lambda-go's runtime client.
func TestResponsesComeFromOneWarmProcess(t *testing.T) {
	rt, _ := newRuntime(t)
	h := rt.NewInstance()
	ctx := lambdacontext.NewContext(withTimeout(t, time.Minute),
		&lambdacontext.LambdaContext{AwsRequestID: "req-1", InvokedFunctionArn: "arn:aws:lambda:us-east-1:000000000000:function:test-fn"})
	r1, err := invoke(t, h, ctx, "ok")
	if err != nil {
		t.Fatal(err)
	}
	if r1.RequestID != "req-1" || r1.ARN != "arn:aws:lambda:us-east-1:000000000000:function:test-fn" || r1.Function != "test-fn" || !r1.HasDeadline || r1.Count != 1 {
		t.Fatalf("first invocation saw %+v", r1)
	}
	r2, err := invoke(t, h, withTimeout(t, time.Minute), "ok")
	if err != nil {
		t.Fatal(err)
	}
	if r2.PID != r1.PID || r2.Count != 2 || r2.RequestID == "" || r2.RequestID == r1.RequestID {
		t.Fatalf("second invocation %+v after %+v: want the same warm process, a new request id", r2, r1)
	}
	if s := rt.Stats(); s.Processes != 1 || s.Invocations != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// A returned error comes back as the error of Invoke, with the message the handler returned,
// and the process goes on serving.
func TestFunctionErrorKeepsTheProcess(t *testing.T) {
	rt, _ := newRuntime(t)
	h := rt.NewInstance()
	r1, err := invoke(t, h, withTimeout(t, time.Minute), "ok")
	if err != nil {
		t.Fatal(err)
	}
	_, err = invoke(t, h, withTimeout(t, time.Minute), "error")
	var fe *FunctionError
	if !errors.As(err, &fe) || err.Error() != "boom" || fe.Type != "errorString" {
		t.Fatalf("error %#v, want the handler's error \"boom\" of type errorString", err)
	}
	r3, err := invoke(t, h, withTimeout(t, time.Minute), "ok")
	if err != nil {
		t.Fatal(err)
	}
	if r3.PID != r1.PID || r3.Count != 3 {
		t.Fatalf("after the error: %+v, want process %d's third invocation", r3, r1.PID)
	}
	if s := rt.Stats(); s.FunctionErrors != 1 || s.Crashes != 0 || s.Processes != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// A panic in the handler: aws-lambda-go posts the error and exits; Invoke panics with it (as an
// in-process panic escapes lambda.Handler.Invoke) and the next invocation runs in a new process.
// An exit without any error posted is a Runtime.ExitError crash.
func TestCrashesPanicAndTheNextInvocationStartsAfresh(t *testing.T) {
	for _, tc := range []struct{ do, typ, msg string }{
		{"panic", "string", "kaboom"},
		{"exit", "Runtime.ExitError", "exit status 3"},
	} {
		t.Run(tc.do, func(t *testing.T) {
			rt, logs := newRuntime(t)
			h := rt.NewInstance()
			r1, err := invoke(t, h, withTimeout(t, time.Minute), "ok")
			if err != nil {
				t.Fatal(err)
			}
			v := func() (v any) {
				defer func() { v = recover() }()
				invoke(t, h, withTimeout(t, time.Minute), tc.do)
				return nil
			}()
			fe, ok := v.(*FunctionError)
			if !ok || fe.Type != tc.typ || !strings.Contains(fe.Message, tc.msg) {
				t.Fatalf("recovered %#v, want a *FunctionError of type %s saying %q", v, tc.typ, tc.msg)
			}
			if alive(r1.PID) {
				t.Fatalf("process %d still running after the crash", r1.PID)
			}
			r2, err := invoke(t, h, withTimeout(t, time.Minute), "ok")
			if err != nil {
				t.Fatal(err)
			}
			if r2.PID == r1.PID || r2.Count != 1 {
				t.Fatalf("after the crash: %+v, want a new process", r2)
			}
			if s := rt.Stats(); s.Crashes != 1 || s.Processes != 2 {
				t.Fatalf("stats %+v", s)
			}
			if tc.do == "panic" && !strings.Contains(logs.String(), "kaboom") {
				t.Fatalf("the runtime's log of the panic is not in the output:\n%s", logs)
			}
		})
	}
}

// A process that ends before it asks for its first event fails the invocation as a crash, with
// what it posted to init/error if it did.
func TestInitFailures(t *testing.T) {
	for _, tc := range []struct{ init, typ, msg string }{
		{"exit", "Runtime.ExitError", "Runtime exited during init: exit status 2"},
		{"report", "InitError", "no table"},
	} {
		t.Run(tc.init, func(t *testing.T) {
			rt, err := New(Function{Name: "test-fn", Binary: fn(t), Env: []string{"FN_INIT=" + tc.init}, Stdout: io.Discard, Stderr: io.Discard})
			if err != nil {
				t.Fatal(err)
			}
			defer rt.Close()
			v := func() (v any) {
				defer func() { v = recover() }()
				invoke(t, rt.NewInstance(), withTimeout(t, time.Minute), "ok")
				return nil
			}()
			fe, ok := v.(*FunctionError)
			if !ok || fe.Type != tc.typ || !strings.Contains(fe.Message, tc.msg) {
				t.Fatalf("recovered %#v, want a *FunctionError of type %s saying %q", v, tc.typ, tc.msg)
			}
		})
	}
}

// An invocation still running at its deadline: the process is killed and Invoke returns the
// context's error; the next invocation starts a new process.
func TestTimeoutKillsTheProcess(t *testing.T) {
	rt, _ := newRuntime(t)
	in := rt.NewInstance().(*Instance)
	r1, err := invoke(t, in, withTimeout(t, time.Minute), "ok")
	if err != nil {
		t.Fatal(err)
	}
	p := in.p
	_, err = invoke(t, in, withTimeout(t, time.Second), "hang")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want the deadline", err)
	}
	if !p.gone() || alive(r1.PID) {
		t.Fatalf("process %d still running after the timeout", r1.PID)
	}
	r2, err := invoke(t, in, withTimeout(t, time.Minute), "ok")
	if err != nil {
		t.Fatal(err)
	}
	if r2.PID == r1.PID || r2.Count != 1 {
		t.Fatalf("after the timeout: %+v, want a new process", r2)
	}
	if s := rt.Stats(); s.Timeouts != 1 || s.Processes != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// Two instances are two processes serving at the same time: each invocation returns only once
// both are running.
func TestInstancesRunInParallel(t *testing.T) {
	rt, _ := newRuntime(t)
	dir := t.TempDir()
	payload := []byte(fmt.Sprintf(`{"do":"meet","dir":%q,"parties":2}`, dir))
	var wg sync.WaitGroup
	res := make([]response, 2)
	errs := make([]error, 2)
	for i := range 2 {
		h := rt.NewInstance()
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := h.Invoke(withTimeout(t, time.Minute), payload)
			errs[i] = err
			if err == nil {
				errs[i] = json.Unmarshal(out, &res[i])
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if res[0].PID == res[1].PID {
		t.Fatalf("both invocations ran in process %d", res[0].PID)
	}
	if s := rt.Stats(); s.Processes != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// Close ends every process.
func TestCloseKillsTheProcesses(t *testing.T) {
	rt, _ := newRuntime(t)
	r, err := invoke(t, rt.NewInstance(), withTimeout(t, time.Minute), "ok")
	if err != nil {
		t.Fatal(err)
	}
	rt.Close()
	if alive(r.PID) {
		t.Fatalf("process %d still running after Close", r.PID)
	}
	if _, err := invoke(t, rt.NewInstance(), withTimeout(t, time.Minute), "ok"); err == nil {
		t.Fatal("an invocation after Close succeeded")
	}
}
