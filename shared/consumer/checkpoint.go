package consumer

import (
	"context"
	"sync"
	"time"

	"github.com/tidwall/gjson"
)

// CheckpointStore remembers how far the processor got inside an aggregated Kinesis record whose
// processing stopped part-way, so that the redelivery of that aggregate skips the user records
// already processed.
//
// Idempotency key. A user record is identified by (shard id, sequence number, sub-sequence):
// Kinesis sequence numbers are unique within a shard and the sub-sequence is the user record's
// index in its aggregate, which never changes on redelivery. The processor saves
// (shard, sequence number) → done, meaning sub-sequences 0..done-1 are processed, and Save with
// done = 0 forgets the entry once the aggregate has been fully processed. A durable
// implementation (DynamoCheckpoints) should:
//
//   - key items by shard id + "/" + sequence number (one item per partly processed aggregate,
//     so that concurrent batches of one shard — ParallelizationFactor > 1 — never collide),
//     prefixed with the function's name when functions share the store;
//   - write done only upward (DynamoDB: UpdateItem with ConditionExpression
//     "attribute_not_exists(done) OR done < :done"; a failed condition is not an error);
//   - expire entries (a TTL of the stream's retention period): an aggregate older than that can
//     no longer be redelivered.
//
// The processor calls Load once per invocation (for the first record: the ESM resumes at the
// reported record, so only it can be partly processed) and Save only when a batch stops inside an
// aggregate or finishes one that had an entry, so a durable store costs nothing on the happy path.
// It does not save after every record: a crash or timeout without a response makes Lambda retry
// the whole batch, which is then processed again from its start (at least once).
type CheckpointStore interface {
	// Load returns how many leading user records of the aggregate were processed (0 if unknown).
	Load(ctx context.Context, shardID, sequenceNumber string) (done int, err error)
	// Save records that done leading user records are processed; done == 0 deletes the entry.
	Save(ctx context.Context, shardID, sequenceNumber string, done int) error
}

// MemoryCheckpoints is an in-memory CheckpointStore (tests, `make dev`). It keeps entries only
// while an aggregate is being retried. Safe for concurrent use.
type MemoryCheckpoints struct {
	mu sync.Mutex
	m  map[string]int
}

// NewMemoryCheckpoints returns an empty in-memory store.
func NewMemoryCheckpoints() *MemoryCheckpoints { return &MemoryCheckpoints{m: map[string]int{}} }

// Load implements CheckpointStore.
func (s *MemoryCheckpoints) Load(_ context.Context, shardID, seq string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[shardID+"/"+seq], nil
}

// Save implements CheckpointStore; like a durable store it only moves done upward.
func (s *MemoryCheckpoints) Save(_ context.Context, shardID, seq string, done int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := shardID + "/" + seq
	if done <= 0 {
		delete(s.m, k)
	} else if done > s.m[k] {
		s.m[k] = done
	}
	return nil
}

// Len returns the number of entries (tests).
func (s *MemoryCheckpoints) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// CompareSequenceNumbers compares two Kinesis sequence numbers (decimal integers of up to 128
// bits, written without leading zeros) numerically: -1, 0 or +1.
func CompareSequenceNumbers(a, b string) int {
	if len(a) != len(b) {
		if len(a) < len(b) {
			return -1
		}
		return 1
	}
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// JSONMillisField returns a TimestampFunc reading a top-level JSON number field holding Unix
// milliseconds (for example "ts" of the location messages) with gjson, which walks the message
// without decoding it: a field of the same name in a nested object or inside a string does not
// count. Records without the field, or where it is not a number, are not measured.
func JSONMillisField(field string) TimestampFunc {
	path := gjson.Escape(field)
	return func(r Record) (time.Time, bool) {
		v := gjson.GetBytes(r.Data, path)
		if v.Type != gjson.Number {
			return time.Time{}, false
		}
		return time.UnixMilli(v.Int()), true
	}
}
