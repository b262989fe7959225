package replay_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/nsqio/go-nsq"

	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/local/nsqlocal"
	"github.com/nsqk/nsqk/shared/logread"
	"github.com/nsqk/nsqk/shared/replay"
	"github.com/nsqk/nsqk/shared/shardmap"
)

// TestReplayPublishesInStreamOrder replays a stream of aggregates to NSQ: every user record once,
// each key's records in stream order, counted per shard; with --rate it cannot go faster.
func TestReplayPublishesInStreamOrder(t *testing.T) {
	e := localtest.Kinesis(t, kinesislocal.Options{})
	kc := e.Client()
	stream := localtest.Stream(t, kc, 3)
	n := localtest.NSQD(t, nsqlocal.Options{})
	n.GetTopic("warm").GetChannel("c")

	want := map[string][]string{}
	perShard := map[string]int{}
	m, err := shardmap.Load(context.Background(), kc, stream)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for round := range 10 {
		for u := range 6 {
			key := fmt.Sprintf("user-%d", u)
			a := kpl.NewAggregator(kpl.AggregatorConfig{OuterPartitionKey: key})
			for j := range 5 {
				d := fmt.Sprintf("%s/%d/%d", key, round, j)
				a.Add(key, "", []byte(d))
				want[key] = append(want[key], d)
				total++
			}
			rec := a.Flush(nil)
			if _, err := kc.PutRecord(context.Background(), &kinesis.PutRecordInput{StreamName: aws.String(stream),
				PartitionKey: aws.String(rec.PartitionKey), Data: rec.Data}); err != nil {
				t.Fatal(err)
			}
			perShard[m.Shards()[m.Lookup(shardmap.HashKey(key))].ID] += 5
		}
	}

	const rate = 200
	rp, err := replay.New(replay.Options{NSQDTCPAddress: n.TCPAddr, Topic: "warm", Rate: rate, BatchCount: 50})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	lr, err := logread.New(kc, logread.Options{Stream: stream, Flush: func() error { return rp.Flush(ctx) }})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := lr.Run(ctx, func(r *logread.Record) error { return rp.Add(ctx, r) }); err != nil {
		t.Fatal(err)
	}
	sum, err := rp.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if sum.Published != int64(total) {
		t.Errorf("published %d, want %d", sum.Published, total)
	}
	for id, s := range sum.Shards {
		if s.Records != perShard[id] || s.FirstArrival.IsZero() || s.LastArrival.Before(s.FirstArrival) {
			t.Errorf("shard %s: %+v, want %d records", id, s, perShard[id])
		}
	}
	// The limiter starts with one burst (at most rate) available.
	if min := time.Duration(float64(total-rate) / rate * float64(time.Second)); elapsed < min {
		t.Errorf("%d messages at --rate %d took %s, less than %s", total, rate, elapsed, min)
	}

	var mu sync.Mutex
	got := map[string][]string{}
	count := 0
	c, err := nsq.NewConsumer("warm", "c", nsq.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	c.SetLogger(nil, nsq.LogLevelError)
	c.AddHandler(nsq.HandlerFunc(func(msg *nsq.Message) error {
		key, _, _ := strings.Cut(string(msg.Body), "/")
		mu.Lock()
		got[key] = append(got[key], string(msg.Body))
		count++
		mu.Unlock()
		return nil
	}))
	if err := c.ConnectToNSQD(n.TCPAddr); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for n.Depth("warm", "c") > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	c.Stop()
	<-c.StopChan
	mu.Lock()
	defer mu.Unlock()
	if count != total {
		t.Fatalf("consumed %d, want %d", count, total)
	}
	for k, w := range want {
		if fmt.Sprint(got[k]) != fmt.Sprint(w) {
			t.Errorf("key %s: %v\nwant %v", k, got[k], w)
		}
	}
}

func TestReplayRefusesABadTopic(t *testing.T) {
	if _, err := replay.New(replay.Options{NSQDTCPAddress: "127.0.0.1:1", Topic: "no spaces allowed"}); err == nil {
		t.Error("accepted an invalid topic name")
	}
}
