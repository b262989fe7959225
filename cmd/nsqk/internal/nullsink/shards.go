package nullsink

import (
	"fmt"
	"math/big"
	"time"

	"github.com/nsqk/nsqk/shared/shardmap"
)

// ShardRanges returns the shards CreateStream gives a new stream of n shards (n >= 1): ids
// shardId-000000000000 upwards, shard i covering [i*q, (i+1)*q-1] with q = floor(2^128 / n), the
// last one ending at 2^128-1. Kinesis and kinesalite split the hash key space this way.
func ShardRanges(n int) []shardmap.Shard {
	if n < 1 {
		n = 1
	}
	space := new(big.Int).Lsh(big.NewInt(1), 128)
	q := new(big.Int).Div(space, big.NewInt(int64(n)))
	out := make([]shardmap.Shard, n)
	for i := range out {
		start := new(big.Int).Mul(q, big.NewInt(int64(i)))
		end := new(big.Int).Mul(q, big.NewInt(int64(i+1)))
		if i == n-1 {
			end.Set(space)
		}
		end.Sub(end, big.NewInt(1))
		var s shardmap.Shard
		start.FillBytes(s.Start[:])
		end.FillBytes(s.End[:])
		s.ID = fmt.Sprintf("shardId-%012d", i)
		s.StartKey = start.String()
		out[i] = s
	}
	return out
}

// bucket is a token bucket pair (bytes and records) with a one-second burst: Kinesis' per-shard
// write limit. It starts full, as an idle shard would be.
type bucket struct {
	bytes, records float64
	last           time.Time
}

// take reports whether a record of size bytes may be written at now, and if so spends its tokens.
func (b *bucket) take(now time.Time, size int, bytesPerSec, recordsPerSec float64) bool {
	if b.last.IsZero() {
		b.bytes, b.records, b.last = bytesPerSec, recordsPerSec, now
	}
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.bytes = min(bytesPerSec, b.bytes+dt*bytesPerSec)
		b.records = min(recordsPerSec, b.records+dt*recordsPerSec)
		b.last = now
	}
	if b.bytes < float64(size) || b.records < 1 {
		return false
	}
	b.bytes -= float64(size)
	b.records--
	return true
}
