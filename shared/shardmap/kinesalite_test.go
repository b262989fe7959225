package shardmap_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/shardmap"
)

// The emulator computes the owning shard itself: our prediction must match it for every key.
func TestPredictionMatchesKinesalite(t *testing.T) {
	ctx := context.Background()
	c := localtest.Kinesis(t, kinesislocal.Options{}).Client()
	stream := localtest.Stream(t, c, 5)
	m, err := shardmap.Load(ctx, c, stream)
	if err != nil {
		t.Fatal(err)
	}
	if m.Len() != 5 {
		t.Fatalf("%d shards", m.Len())
	}
	for i := 0; i < 50; i++ {
		key := fmt.Sprintf("u%09d", i*7919)
		out, err := c.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String(stream), PartitionKey: aws.String(key), Data: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		if want := m.Shards()[m.Lookup(shardmap.HashKey(key))].ID; aws.ToString(out.ShardId) != want {
			t.Fatalf("key %s: kinesalite chose %s, we predicted %s", key, aws.ToString(out.ShardId), want)
		}
		// An explicit hash key at a shard's StartKey routes there regardless of the partition key.
		target := m.Shards()[i%m.Len()]
		out, err = c.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String(stream), PartitionKey: aws.String(key), ExplicitHashKey: aws.String(target.StartKey), Data: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(out.ShardId) != target.ID {
			t.Fatalf("EHK %s landed on %s, want %s", target.StartKey, aws.ToString(out.ShardId), target.ID)
		}
	}
}
