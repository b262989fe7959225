// Package shardmap maps partition keys to the Kinesis shards that own them.
//
// Kinesis hashes a partition key with MD5 and reads the digest as a 128-bit big-endian unsigned
// integer; the open shard whose [StartingHashKey, EndingHashKey] range (inclusive, decimal strings in
// the API) contains it receives the record. An explicit hash key overrides the digest. The bridge uses
// this to pack user records into one aggregate per shard and to give each aggregate an outer explicit
// hash key inside that shard's range.
package shardmap

import (
	"context"
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// Hash is a 128-bit hash key, big-endian: exactly the MD5 digest of a partition key.
type Hash [16]byte

// MaxHash is 2^128-1, the end of the hash key space.
var MaxHash = Hash{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// HashKey returns the hash key Kinesis derives from a partition key.
func HashKey(partitionKey string) Hash { return md5.Sum([]byte(partitionKey)) }

// Compare returns -1, 0 or +1 as h is below, equal to or above o.
func (h Hash) Compare(o Hash) int {
	a, b := binary.BigEndian.Uint64(h[:8]), binary.BigEndian.Uint64(o[:8])
	if a == b {
		a, b = binary.BigEndian.Uint64(h[8:]), binary.BigEndian.Uint64(o[8:])
	}
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Low64 returns the low 64 bits, used to spread keys over buckets within a shard independently of
// the high bits that decide the shard.
func (h Hash) Low64() uint64 { return binary.BigEndian.Uint64(h[8:]) }

// String returns the decimal form the Kinesis API uses for hash keys.
func (h Hash) String() string { return new(big.Int).SetBytes(h[:]).String() }

// ParseHash parses a decimal hash key (0 .. 2^128-1).
func ParseHash(s string) (Hash, error) {
	var h Hash
	n, ok := new(big.Int).SetString(s, 10)
	if !ok || n.Sign() < 0 || n.BitLen() > 128 {
		return h, fmt.Errorf("shardmap: invalid hash key %q", s)
	}
	n.FillBytes(h[:])
	return h, nil
}

// Shard is one open shard's hash key range.
type Shard struct {
	ID    string
	Start Hash // inclusive
	End   Hash // inclusive
	// StartKey is Start in decimal: an explicit hash key that routes a record to this shard.
	StartKey string
}

// Map is an immutable view of a stream's open shards, sorted by range.
type Map struct {
	shards []Shard
}

// ErrCoverage reports open shards that do not tile the hash key space (a listing taken in the
// middle of a reshard, for example); callers keep their previous map and retry.
var ErrCoverage = errors.New("shardmap: open shards do not cover the hash key space exactly")

// New builds a map from open shards; they must cover 0 .. 2^128-1 without gaps or overlaps.
func New(shards []Shard) (*Map, error) {
	s := slices.Clone(shards)
	slices.SortFunc(s, func(a, b Shard) int { return a.Start.Compare(b.Start) })
	if len(s) == 0 || s[0].Start != (Hash{}) || s[len(s)-1].End != MaxHash {
		return nil, ErrCoverage
	}
	for i := range s {
		if s[i].End.Compare(s[i].Start) < 0 {
			return nil, fmt.Errorf("%w: shard %s ends before it starts", ErrCoverage, s[i].ID)
		}
		if i > 0 && !adjacent(s[i-1].End, s[i].Start) {
			return nil, fmt.Errorf("%w: %s then %s", ErrCoverage, s[i-1].ID, s[i].ID)
		}
		if s[i].StartKey == "" {
			s[i].StartKey = s[i].Start.String()
		}
	}
	return &Map{shards: s}, nil
}

// adjacent reports whether b == a+1.
func adjacent(a, b Hash) bool {
	for i := 15; i >= 0; i-- {
		a[i]++
		if a[i] != 0 {
			break
		}
	}
	return a == b
}

// Len returns the number of open shards.
func (m *Map) Len() int { return len(m.shards) }

// Shards returns the shards sorted by range (do not modify).
func (m *Map) Shards() []Shard { return m.shards }

// Lookup returns the index (into Shards) of the shard owning h.
func (m *Map) Lookup(h Hash) int {
	// The first shard whose End >= h; shards tile the space, so it contains h.
	lo, hi := 0, len(m.shards)-1
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if m.shards[mid].End.Compare(h) < 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// Index returns the position of the shard with this id, or -1.
func (m *Map) Index(id string) int {
	for i := range m.shards {
		if m.shards[i].ID == id {
			return i
		}
	}
	return -1
}

// Equal reports whether two maps hold the same shards and ranges.
func (m *Map) Equal(o *Map) bool {
	if m == nil || o == nil {
		return m == o
	}
	return slices.EqualFunc(m.shards, o.shards, func(a, b Shard) bool {
		return a.ID == b.ID && a.Start == b.Start && a.End == b.End
	})
}

// String lists the shard ids, for logs.
func (m *Map) String() string {
	ids := make([]string, len(m.shards))
	for i, s := range m.shards {
		ids[i] = s.ID
	}
	return strings.Join(ids, ",")
}

// Lister is the part of the Kinesis API that Load needs.
type Lister interface {
	ListShards(context.Context, *kinesis.ListShardsInput, ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
}

// ListAll lists every shard of a stream (name or ARN), open and closed, following NextToken.
func ListAll(ctx context.Context, c Lister, stream string) ([]types.Shard, error) {
	var all []types.Shard
	in := &kinesis.ListShardsInput{StreamName: aws.String(stream)}
	if strings.HasPrefix(stream, "arn:") {
		in = &kinesis.ListShardsInput{StreamARN: aws.String(stream)}
	}
	for {
		out, err := c.ListShards(ctx, in)
		if err != nil {
			return nil, err
		}
		all = append(all, out.Shards...)
		if out.NextToken == nil {
			return all, nil
		}
		in = &kinesis.ListShardsInput{NextToken: out.NextToken}
	}
}

// Load lists the stream's (name or ARN) shards and builds a map of the open ones. Open = no ending sequence
// number; the filter is applied here rather than with ShardFilter because not every emulator
// supports it.
func Load(ctx context.Context, c Lister, stream string) (*Map, error) {
	all, err := ListAll(ctx, c, stream)
	if err != nil {
		return nil, err
	}
	var open []Shard
	for _, s := range all {
		if s.SequenceNumberRange != nil && s.SequenceNumberRange.EndingSequenceNumber != nil {
			continue
		}
		if s.HashKeyRange == nil {
			return nil, fmt.Errorf("shardmap: shard %s has no hash key range", aws.ToString(s.ShardId))
		}
		start, err := ParseHash(aws.ToString(s.HashKeyRange.StartingHashKey))
		if err != nil {
			return nil, err
		}
		end, err := ParseHash(aws.ToString(s.HashKeyRange.EndingHashKey))
		if err != nil {
			return nil, err
		}
		open = append(open, Shard{ID: aws.ToString(s.ShardId), Start: start, End: end, StartKey: aws.ToString(s.HashKeyRange.StartingHashKey)})
	}
	return New(open)
}
