package nullsink

import (
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/shardmap"
)

// TestRoutingMatchesKinesalite sends the same entries to kinesalite and to the sink: the shard
// ranges ListShards reports and the shard every entry lands on must be the same.
func TestRoutingMatchesKinesalite(t *testing.T) {
	kl := localtest.Kinesis(t, kinesislocal.Options{}).Client()
	for _, n := range []int{1, 3, 4, 16} {
		stream := fmt.Sprintf("routing-%d", n)
		if err := kinesislocal.CreateStream(ctx(t), kl, stream, int32(n)); err != nil {
			t.Fatal(err)
		}
		s, c := startSink(t, Config{Stream: stream, Shards: n})
		theirs, err := shardmap.Load(ctx(t), kl, stream)
		if err != nil {
			t.Fatal(err)
		}
		ours, err := shardmap.Load(ctx(t), c, stream)
		if err != nil {
			t.Fatal(err)
		}
		if !ours.Equal(theirs) {
			t.Fatalf("%d shards: sink lists %v, kinesalite %v", n, ours.Shards(), theirs.Shards())
		}
		for i, sh := range theirs.Shards() {
			out, _ := kl.ListShards(ctx(t), &kinesis.ListShardsInput{StreamName: aws.String(stream)})
			if aws.ToString(out.Shards[i].HashKeyRange.StartingHashKey) != s.Shards()[i].StartKey || sh.ID != s.Shards()[i].ID {
				t.Fatalf("shard %d: kinesalite %s %s, sink %s %s", i, sh.ID, aws.ToString(out.Shards[i].HashKeyRange.StartingHashKey),
					s.Shards()[i].ID, s.Shards()[i].StartKey)
			}
		}
		keys := randomKeys(1000, uint64(100+n))
		ehks := hashKeysFor(keys, s.Shards())
		want := putAll(t, kl, stream, keys, ehks)
		got := putAll(t, c, stream, keys, ehks)
		for i := range keys {
			if got[i] != want[i] {
				t.Fatalf("%d shards: key %q ehk %q: sink %s, kinesalite %s", n, keys[i], ehks[i], got[i], want[i])
			}
		}
	}
}
