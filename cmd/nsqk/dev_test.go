package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// The whole local flow end to end: publisher -> nsqd -> bridge -> kinesalite -> event source
// mapping -> both Lambda functions. Every good message is acknowledged, read by both consumers
// exactly once in per-key order, every bad one dead-lettered, nothing left in NSQ.
func TestDevRunsTheWholeFlow(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kinesalite")
	}
	var out bytes.Buffer
	res, err := runDev(context.Background(), devOptions{duration: 2 * time.Second, rate: 1000, users: 500, shards: 2,
		keyBuckets: 2, badEvery: 100, maxBuffered: 50 * time.Millisecond, every: time.Second, dir: t.TempDir(),
		emulator: "kinesalite"}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if res.Published < 1000 || res.Bad < 10 {
		t.Fatalf("published %d good and %d bad: the publisher did not run at its rate", res.Published, res.Bad)
	}
	if res.Acked != float64(res.Published) || res.DeadLettered != float64(res.Bad) || res.LeftInNSQ != 0 {
		t.Fatalf("%+v: acked/dead-lettered do not match what was published", res)
	}
	if res.MonitorRecords != res.Published || res.Applied != res.Published || res.OrderViolations != 0 || res.Duplicates != 0 || res.OnFailure != 0 {
		t.Fatalf("%+v: consumers did not see every message once in order", res)
	}
	if res.Records >= float64(res.Published)/5 {
		t.Fatalf("%v Kinesis records for %d messages", res.Records, res.Published)
	}
	for _, want := range []string{"summary", "order violations 0", "left in NSQ: 0", "dead letter example",
		"users stored in DynamoDB (dynalite", "checkpoints in DynamoDB (dynalite", "dead-letter queues in SQS",
		"nsqk tail --stream nsqk-dev", "nsqk redrive --nsqd-tcp-address"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
}
