package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The whole local flow end to end: publisher -> nsqd -> bridge -> kinesalite -> event source
// mapping -> both built-in Lambda functions and a team's own consumer (testdata/functions/seen,
// built and run as its own processes behind the local Lambda Runtime API). Every good message is
// acknowledged, read by every consumer exactly once in per-key order, every bad one
// dead-lettered, nothing left in NSQ.
func TestDevRunsTheWholeFlow(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kinesalite")
	}
	var out bytes.Buffer
	seen := filepath.Join(t.TempDir(), "seen.txt")
	res, err := runDev(context.Background(), devOptions{duration: 2 * time.Second, rate: 1000, users: 500, shards: 2,
		keyBuckets: 2, badEvery: 100, maxBuffered: 50 * time.Millisecond, every: time.Second, dir: t.TempDir(),
		emulator: "kinesalite", functionsDir: "testdata/functions", consumers: "all", consumerEnv: []string{"SEEN_FILE=" + seen}}, &out)
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
		"nsqk tail --stream nsqk-dev", "nsqk redrive --nsqd-tcp-address",
		"building testdata/functions/seen", "seen (testdata/functions/seen, own process per instance"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}

	// The own consumer: every location once, in per-user order; the refused ones dead-lettered.
	b, err := os.ReadFile(seen)
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]uint64{}
	var lines, third int64
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var user string
		var seq uint64
		if _, err := fmt.Sscan(l, &user, &seq); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if seq != last[user]+1 {
			t.Fatalf("%s: seq %d after %d: a location lost, repeated or out of order", user, seq, last[user])
		}
		last[user] = seq
		lines++
		if seq == 3 {
			third++
		}
	}
	own := res.Own["seen"]
	if lines != res.Published || third == 0 || own.DeadLettered != third || own.OnFailure != 0 ||
		own.RecordsDone != int64(res.Records) || own.UserRecords != lines-third || own.Processes < 1 || own.Crashes != 0 {
		t.Fatalf("seen: %d locations (%d third ones) of %d published; %+v", lines, third, res.Published, own)
	}
	if !strings.Contains(out.String(), fmt.Sprintf("seen       %d user records processed (its Records metric) from %d Kinesis records done", lines-third, own.RecordsDone)) ||
		!strings.Contains(out.String(), fmt.Sprintf("dead-lettered %d;", third)) {
		t.Fatalf("the summary lacks the own consumer's line:\n%s", out.String())
	}
}
