package lambdart

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/nsqk/nsqk/shared/consumer"
	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/esm"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/localtest"
)

var (
	consumerOnce sync.Once
	consumerBin  string
	consumerErr  error
)

// consumerBinary builds testdata/consumer (a consumer.Main function) once per test binary.
func consumerBinary(t *testing.T) string {
	t.Helper()
	bin := fn(t) // its directory is removed by TestMain
	consumerOnce.Do(func() {
		consumerBin = filepath.Join(filepath.Dir(bin), "consumer")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		consumerErr = Build(ctx, "testdata/consumer", consumerBin)
	})
	if consumerErr != nil {
		t.Fatal(consumerErr)
	}
	return consumerBin
}

// A transient error at user record 6 of an aggregate, and the retry in a new process (every
// invocation gets a new instance): with the checkpoint table the new process skips records 0-5,
// so each is processed once; without it (memory checkpoints) they are processed again.
func TestRetryInANewProcessSkipsCheckpointedSubRecords(t *testing.T) {
	kc := localtest.Kinesis(t, kinesislocal.Options{Stderr: os.Stderr}).Client()
	dyn := localtest.Dynamo(t)
	table := localtest.Table(t, dyn.Client(), "id")
	for _, tc := range []struct {
		name       string
		checkpoint bool
		want       []string
	}{
		{"dynamodb", true, []string{"r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"}},
		{"memory", false, []string{"r0", "r1", "r2", "r3", "r4", "r5", "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream := localtest.Stream(t, kc, 1)
			a := kpl.NewAggregator(kpl.AggregatorConfig{})
			for i := range 10 {
				if err := a.Add(fmt.Sprint("user-", i), "", []byte(fmt.Sprint("r", i))); err != nil {
					t.Fatal(err)
				}
			}
			agg := a.Flush(nil)
			if _, err := kc.PutRecord(context.Background(), &kinesis.PutRecordInput{StreamName: aws.String(stream),
				PartitionKey: aws.String(agg.PartitionKey), Data: agg.Data}); err != nil {
				t.Fatal(err)
			}
			seen := filepath.Join(t.TempDir(), "seen")
			env := []string{"SEEN_FILE=" + seen, "MARKS=" + t.TempDir(), "FAIL_ONCE=r6", "AWS_ENDPOINT_URL_DYNAMODB=" + dyn.Endpoint}
			if tc.checkpoint {
				env = append(env, consumer.CheckpointTableEnv+"="+table)
			}
			var esmLog, logs strings.Builder
			var mu sync.Mutex
			rt, err := New(Function{Name: "consumer-" + tc.name, Binary: consumerBinary(t), Env: env,
				Stdout: io.Discard, Stderr: lockedBuilder{&mu, &logs}})
			if err != nil {
				t.Fatal(err)
			}
			defer rt.Close()
			m := esm.New(kc, rt.NewInstance, esm.Config{Stream: stream, FunctionName: "consumer-" + tc.name, MaximumRetryAttempts: 3,
				ReportBatchItemFailures: true, InstancePerInvocation: true, FunctionTimeout: 30 * time.Second, FastTiming: true,
				RetryBackoff: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(lockedBuilder{&mu, &esmLog}, nil))})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- m.Run(ctx) }()
			defer func() { cancel(); <-done }()
			wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
			defer wcancel()
			s, err := m.Wait(wctx, func(s esm.Stats) bool { return s.RecordsDone >= 1 })
			if err != nil {
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("%v: %+v\n%s\n%s", err, s, esmLog.String(), logs.String())
			}
			if s.PartialFailures != 1 || s.OnFailureRecords != 0 || s.Instances != 2 || rt.Stats().Processes != 2 {
				t.Fatalf("mapping %+v, runtime %+v: want one partial failure retried in a second process", s, rt.Stats())
			}
			b, err := os.ReadFile(seen)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Fields(string(b)); strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("processed %v, want %v", got, tc.want)
			}
		})
	}
}
