package lambdart

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/nsqk/nsqk/shared/local/esm"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/localtest"
	"log/slog"
)

// The event source mapping emulator drives the function's processes: a returned error is a
// function error on the same process, a crash makes the mapping start a new instance (a new
// process), and every record is handled in the end.
func TestEventSourceMappingDrivesTheProcesses(t *testing.T) {
	kc := localtest.Kinesis(t, kinesislocal.Options{Stderr: os.Stderr}).Client()
	stream := localtest.Stream(t, kc, 1)
	for i := range 20 {
		data := fmt.Sprint("record-", i)
		switch i {
		case 5:
			data = "fail-once"
		case 12:
			data = "crash-once"
		}
		if _, err := kc.PutRecord(context.Background(), &kinesis.PutRecordInput{StreamName: aws.String(stream),
			PartitionKey: aws.String("k"), Data: []byte(data)}); err != nil {
			t.Fatal(err)
		}
	}
	var logs strings.Builder
	var mu sync.Mutex
	rt, err := New(Function{Name: "test-fn", Binary: fn(t), Env: []string{"FN_MARKS=" + t.TempDir()},
		Stdout: lockedBuilder{&mu, &logs}, Stderr: lockedBuilder{&mu, &logs}})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	var esmLog strings.Builder
	m := esm.New(kc, rt.NewInstance, esm.Config{Stream: stream, FunctionName: "test-fn", BatchSize: 5, MaximumRetryAttempts: 3,
		FunctionTimeout: 30 * time.Second, FastTiming: true, RetryBackoff: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(lockedBuilder{&mu, &esmLog}, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	s, err := m.Wait(wctx, func(s esm.Stats) bool { return s.RecordsDone >= 20 })
	if err != nil {
		t.Fatalf("%v: %+v\n%s", err, s, esmLog.String())
	}
	rs := rt.Stats()
	if s.OnFailureRecords != 0 || s.FunctionErrors != 2 || s.InstanceResets != 1 || s.Instances != 2 {
		t.Fatalf("mapping %+v: want 2 function errors, 1 instance reset, nothing discarded\n%s\n%s", s, esmLog.String(), logs.String())
	}
	if rs.Processes != 2 || rs.Crashes != 1 || rs.FunctionErrors != 1 || rs.Invocations != s.Invocations {
		t.Fatalf("runtime %+v, mapping %+v", rs, s)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, want := range []string{"failure requested", "panic: crash requested"} {
		if !strings.Contains(esmLog.String(), want) {
			t.Fatalf("the mapping's log lacks %q:\n%s", want, esmLog.String())
		}
	}
}
