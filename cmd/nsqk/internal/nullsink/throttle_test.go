package nullsink

import (
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// fakeClock is a settable clock for the throttle.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// put sends n entries of size data bytes (key "k", which is 1 byte) and returns the number of
// throttled ones, checking their error code and that they are the last ones.
func put(t *testing.T, c *kinesis.Client, n, size int) int {
	t.Helper()
	in := &kinesis.PutRecordsInput{StreamName: aws.String("st")}
	for range n {
		in.Records = append(in.Records, types.PutRecordsRequestEntry{Data: make([]byte, size), PartitionKey: aws.String("k")})
	}
	out, err := c.PutRecords(ctx(t), in)
	if err != nil {
		t.Fatal(err)
	}
	failed := 0
	for i, r := range out.Records {
		switch code := aws.ToString(r.ErrorCode); {
		case code == "":
			if failed > 0 {
				t.Fatalf("entry %d accepted after a throttled one (a bucket refilled inside a request?)", i)
			}
			if r.SequenceNumber == nil || aws.ToString(r.ShardId) != "shardId-000000000000" {
				t.Fatalf("entry %d: %+v", i, r)
			}
		case code == "ProvisionedThroughputExceededException":
			failed++
			if r.SequenceNumber != nil || aws.ToString(r.ErrorMessage) == "" {
				t.Fatalf("throttled entry %d: %+v", i, r)
			}
		default:
			t.Fatalf("entry %d: error %s", i, code)
		}
	}
	if int(aws.ToInt32(out.FailedRecordCount)) != failed {
		t.Fatalf("FailedRecordCount %d, %d failed entries", aws.ToInt32(out.FailedRecordCount), failed)
	}
	return failed
}

func TestThrottleRecordsPerSecond(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	s, c := startSink(t, Config{Stream: "st", Throttle: true, Now: clk.Now})
	if f := put(t, c, 500, 10); f != 0 { // a full bucket: one second of burst
		t.Fatalf("%d throttled of the first 500", f)
	}
	if f := put(t, c, 500, 10); f != 0 {
		t.Fatalf("%d throttled of the second 500", f)
	}
	if f := put(t, c, 10, 10); f != 10 {
		t.Fatalf("bucket empty: %d of 10 throttled", f)
	}
	clk.Advance(100 * time.Millisecond) // 100 records of credit
	if f := put(t, c, 150, 10); f != 50 {
		t.Fatalf("after 100 ms: %d of 150 throttled, want 50", f)
	}
	clk.Advance(time.Hour) // the burst is capped at one second
	if f := put(t, c, 500, 1) + put(t, c, 500, 1); f != 0 {
		t.Fatal(f)
	}
	if f := put(t, c, 1, 1); f != 1 {
		t.Fatalf("after an hour and 1000 records: not throttled")
	}
	st := s.Stats()
	if st.EntriesThrottled != 61 || st.Shards[0].Throttled != 61 || st.Entries != 2161 || st.EntriesAccepted != 500+500+100+500+500 {
		t.Fatalf("stats %+v", st)
	}
}

func TestThrottleBytesPerSecond(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	_, c := startSink(t, Config{Stream: "st", Throttle: true, Now: clk.Now})
	const size = 100_000 - 1              // + 1-byte key = 100 kB
	if f := put(t, c, 11, size); f != 1 { // 10 x 100 kB fit in 1 MiB, the 11th does not
		t.Fatalf("%d of 11 throttled, want 1", f)
	}
	clk.Advance(40 * time.Millisecond) // 48576 + 41943 bytes: still short of 100 kB
	if f := put(t, c, 1, size); f != 1 {
		t.Fatal("accepted with too little credit")
	}
	clk.Advance(10 * time.Millisecond)
	if f := put(t, c, 1, size); f != 0 {
		t.Fatal("throttled with enough credit")
	}
}

func TestThrottlePerShard(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	s, c := startSink(t, Config{Stream: "st", Shards: 2, Throttle: true, RecordsPerSecond: 10, Now: clk.Now})
	in := &kinesis.PutRecordsInput{StreamName: aws.String("st")}
	for i := range 40 { // 20 per shard, routed by explicit hash key
		in.Records = append(in.Records, types.PutRecordsRequestEntry{Data: []byte("x"), PartitionKey: aws.String("k"),
			ExplicitHashKey: aws.String(s.Shards()[i%2].StartKey)})
	}
	out, err := c.PutRecords(ctx(t), in)
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToInt32(out.FailedRecordCount) != 20 {
		t.Fatalf("%d failed, want 10 per shard", aws.ToInt32(out.FailedRecordCount))
	}
	st := s.Stats()
	if st.Shards[0].Throttled != 10 || st.Shards[1].Throttled != 10 {
		t.Fatalf("per shard %+v", st.Shards)
	}
}
