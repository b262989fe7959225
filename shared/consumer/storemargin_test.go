package consumer

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
)

// deadlineStore records the deadline of each Save call.
type deadlineStore struct {
	*MemoryCheckpoints
	saves []time.Time
}

func (s *deadlineStore) Save(ctx context.Context, shardID, seq string, done int) error {
	d, ok := ctx.Deadline()
	if !ok {
		d = time.Time{}
	}
	s.saves = append(s.saves, d)
	return s.MemoryCheckpoints.Save(ctx, shardID, seq, done)
}

// A checkpoint saved when the processor stops for the deadline must not outlive the stop margin:
// the response has to reach Lambda before the invocation times out, or the progress is lost.
func TestCheckpointSaveAfterTheStopIsBoundedByTheMargin(t *testing.T) {
	const sh = "shardId-000000000001"
	ev := events.KinesisEvent{Records: []events.KinesisEventRecord{
		kinesisRecord(sh, "200", "a", aggregate(t, userRec{"u1", "", "agg-0"}, userRec{"u2", "", "agg-1"}, userRec{"u3", "", "agg-2"})),
	}}
	store := &deadlineStore{MemoryCheckpoints: NewMemoryCheckpoints()}
	store.MemoryCheckpoints.Save(context.Background(), sh, "200", 1) // a previous invocation did agg-0
	margin := 500 * time.Millisecond
	p := NewProcessor(func(context.Context, Record) error { return nil },
		WithLogger(quiet), WithCheckpointStore(store), WithDeadlineMargin(margin))
	deadline := time.Now().Add(margin / 2) // already inside the margin: stop at once
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	// Nothing is processed in this invocation, so the stop is a function error at the head of the
	// batch (the mapping then retries it); the checkpoint of agg-0 is saved all the same.
	if _, err := p.Handle(ctx, ev); !errors.Is(err, ErrHeadOfBatch) {
		t.Fatalf("err %v, want ErrHeadOfBatch", err)
	}
	if len(store.saves) != 1 {
		t.Fatalf("%d saves, want 1", len(store.saves))
	}
	if d := store.saves[0]; d.IsZero() || d.After(deadline.Add(-margin/4)) {
		t.Fatalf("Save may run until %v; the invocation deadline is %v and a quarter of the margin is kept to answer", d, deadline)
	}
}
