// Command fn is the function the lambdart tests run: what it does is named in its event.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

type event struct {
	// Records makes it a Kinesis event: a record whose data is fail-once or crash-once returns an
	// error or panics the first time it is seen (by any process: marks in FN_MARKS).
	Records []struct {
		Kinesis struct {
			Data []byte `json:"data"`
		} `json:"kinesis"`
	} `json:"Records"`
	Do      string `json:"do"`      // ok, error, panic, exit, hang, meet
	Dir     string `json:"dir"`     // meet: where the invocations leave their marks
	Parties int    `json:"parties"` // meet: how many invocations must be running at once
}

type response struct {
	PID        int    `json:"pid"`
	Count      int64  `json:"count"` // invocations this process served
	RequestID  string `json:"request_id"`
	ARN        string `json:"arn"`
	Function   string `json:"function"`
	HasTimeout bool   `json:"has_deadline"`
}

var count atomic.Int64

func handle(ctx context.Context, e event) (response, error) {
	n := count.Add(1)
	lc, _ := lambdacontext.FromContext(ctx)
	_, hasDeadline := ctx.Deadline()
	r := response{PID: os.Getpid(), Count: n, RequestID: lc.AwsRequestID, ARN: lc.InvokedFunctionArn,
		Function: os.Getenv("AWS_LAMBDA_FUNCTION_NAME"), HasTimeout: hasDeadline}
	for _, rec := range e.Records {
		what := string(rec.Kinesis.Data)
		if what != "fail-once" && what != "crash-once" {
			continue
		}
		f, err := os.OpenFile(filepath.Join(os.Getenv("FN_MARKS"), what), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			continue // seen before
		}
		f.Close()
		if what == "crash-once" {
			panic("crash requested")
		}
		return r, errors.New("failure requested")
	}
	switch e.Do {
	case "error":
		return r, errors.New("boom")
	case "panic":
		panic("kaboom")
	case "exit":
		os.Exit(3)
	case "hang":
		select {}
	case "meet":
		// Returns once Parties invocations are running at the same time (or fails at the deadline).
		if err := os.WriteFile(filepath.Join(e.Dir, fmt.Sprint(os.Getpid())), nil, 0o644); err != nil {
			return r, err
		}
		for {
			m, _ := filepath.Glob(filepath.Join(e.Dir, "*"))
			if len(m) >= e.Parties {
				return r, nil
			}
			select {
			case <-ctx.Done():
				return r, ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return r, nil
}

func main() {
	switch os.Getenv("FN_INIT") {
	case "exit": // a failed initialization, as consumer.Main ends one
		fmt.Fprintln(os.Stderr, "init failed")
		os.Exit(2)
	case "report": // a runtime reporting its failed initialization to the Runtime API
		api := "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + "/2018-06-01/runtime/init/error"
		resp, err := http.Post(api, "application/json", strings.NewReader(`{"errorMessage":"no table","errorType":"InitError"}`))
		if err == nil {
			resp.Body.Close()
		}
		os.Exit(1)
	}
	lambda.Start(handle)
}
