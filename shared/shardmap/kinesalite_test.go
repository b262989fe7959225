package shardmap_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/shardmap"
)

// The emulator computes the owning shard itself: our prediction must match it for every key.
func TestPredictionMatchesKinesalite(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kinesalite")
	}
	ctx := context.Background()
	e, err := kinesislocal.Start(ctx, kinesislocal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	c := e.Client()
	if err := kinesislocal.CreateStream(ctx, c, "s", 5); err != nil {
		t.Fatal(err)
	}
	m, err := shardmap.Load(ctx, c, "s")
	if err != nil {
		t.Fatal(err)
	}
	if m.Len() != 5 {
		t.Fatalf("%d shards", m.Len())
	}
	for i := 0; i < 50; i++ {
		key := fmt.Sprintf("u%09d", i*7919)
		out, err := c.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String("s"), PartitionKey: aws.String(key), Data: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		if want := m.Shards()[m.Lookup(shardmap.HashKey(key))].ID; aws.ToString(out.ShardId) != want {
			t.Fatalf("key %s: kinesalite chose %s, we predicted %s", key, aws.ToString(out.ShardId), want)
		}
		// An explicit hash key at a shard's StartKey routes there regardless of the partition key.
		target := m.Shards()[i%m.Len()]
		out, err = c.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String("s"), PartitionKey: aws.String(key), ExplicitHashKey: aws.String(target.StartKey), Data: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(out.ShardId) != target.ID {
			t.Fatalf("EHK %s landed on %s, want %s", target.StartKey, aws.ToString(out.ShardId), target.ID)
		}
	}
}
