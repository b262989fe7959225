package consumer

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

// Region and AccountID are what local ARNs are built with.
const (
	Region    = "us-east-1"
	AccountID = "000000000000"
)

// FunctionARN returns the local ARN of a function name.
func FunctionARN(name string) string {
	return "arn:aws:lambda:" + Region + ":" + AccountID + ":function:" + name
}

// InvokeResult is the outcome of one local invocation.
type InvokeResult struct {
	RequestID string
	Response  []byte // the handler's JSON response; nil on error
	// Err is the function error: what the handler returned, a recovered panic, or a timeout.
	Err error
	// ErrorType is the Lambda error type: "" on success, "Unhandled" for a handler error or
	// panic, "TimedOut" when the invocation outlived its timeout.
	ErrorType string
}

// Invoke calls h as the Lambda runtime would for one event: a context carrying the timeout as
// its deadline and a lambdacontext.LambdaContext (request id, function ARN), a recovered panic
// reported as a function error. When the timeout passes first, Invoke reports a timeout but
// still waits for the handler to return (nothing can stop a goroutine; real Lambda would kill
// the sandbox), so that a retry never runs beside the abandoned attempt.
func Invoke(ctx context.Context, h lambda.Handler, payload []byte, functionName string, timeout time.Duration) InvokeResult {
	res := InvokeResult{RequestID: NewUUID()}
	if timeout <= 0 {
		timeout = 3 * time.Second // Lambda's default
	}
	ictx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ictx = lambdacontext.NewContext(ictx, &lambdacontext.LambdaContext{
		AwsRequestID:       res.RequestID,
		InvokedFunctionArn: FunctionARN(functionName),
	})
	type out struct {
		b   []byte
		err error
	}
	done := make(chan out, 1)
	go func() {
		var o out
		defer func() {
			if v := recover(); v != nil {
				o = out{nil, fmt.Errorf("panic: %v\n%s", v, debug.Stack())}
			}
			done <- o
		}()
		b, err := h.Invoke(ictx, payload)
		o = out{append([]byte(nil), b...), err} // the handler's buffer is pooled
	}()
	select {
	case o := <-done:
		res.Response, res.Err = o.b, o.err
		if res.Err != nil {
			res.Response, res.ErrorType = nil, "Unhandled"
		}
	case <-ictx.Done():
		<-done
		res.Response, res.Err, res.ErrorType = nil, fmt.Errorf("task timed out after %v", timeout), "TimedOut"
		if ctx.Err() != nil {
			res.Err = ctx.Err()
		}
	}
	return res
}

// InvokeFile runs h once on the event in path (as `make invoke` does) and writes its JSON
// response and a newline to w. It returns the function error, if any.
func InvokeFile(ctx context.Context, h lambda.Handler, path, functionName string, timeout time.Duration, w io.Writer) error {
	payload, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	res := Invoke(ctx, h, payload, functionName, timeout)
	if res.Err != nil {
		return fmt.Errorf("%s: %w", res.ErrorType, res.Err)
	}
	_, err = fmt.Fprintf(w, "%s\n", res.Response)
	return err
}

// NewUUID returns a random version 4 UUID.
func NewUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
