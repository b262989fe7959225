// Package lastlocation is a business consumer of the location stream: it keeps the last known
// location of every user, which must never go back in time.
//
// Why per-shard order matters here: each update overwrites the previous one, so processing two
// updates of a user out of order leaves the older location as "last" — silently and for good,
// until the user moves again. The stream keeps a user's messages in one shard in order, the
// consumer processes them in order, and the store's write is conditional on the message's seq
// being higher than the stored one: defence in depth, so that a replay (at-least-once delivery)
// or any reordering upstream can never move a user back. Such rejected writes are counted
// (Stale, Duplicates) and should be zero apart from redeliveries.
//
// A message that is not a valid location fails its record permanently (consumer.Permanent): the
// processor sends that one user record to the function's dead-letter queue with the reason and
// goes on with the next. A store error is transient: the batch stops there and Lambda retries
// from that record. Losing an update silently is not acceptable here.
package lastlocation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/nsqk/nsqk/shared/consumer"
	"github.com/nsqk/nsqk/shared/emf"
	"github.com/nsqk/nsqk/shared/location"
)

// Location is the stored last location of a user.
type Location struct {
	UserID   string
	Seq      uint64 // the message's per-user counter: the version of this item
	TS       int64  // message time, Unix ms
	Lat, Lon float64
	Accuracy float64
	Speed    float64
	Heading  int
	// Where it came from (for tracing): Kinesis shard, sequence number and sub-sequence.
	ShardID        string
	SequenceNumber string
	SubSequence    int
	UpdatedAt      int64 // processing time, Unix ms
}

// PutResult tells whether a Put changed the store.
type PutResult struct {
	Applied bool
	// StoredSeq is the seq already stored when the write was rejected (>= the new one).
	StoredSeq uint64
}

// Store holds the last location per user.
type Store interface {
	// Put stores loc unless the stored location of loc.UserID has a seq >= loc.Seq (atomic
	// compare-and-set on seq).
	Put(ctx context.Context, loc Location) (PutResult, error)
	// Get returns the stored location of a user.
	Get(ctx context.Context, userID string) (Location, bool, error)
}

// MemoryStore is the in-memory Store for tests and local runs. Safe for concurrent use.
type MemoryStore struct {
	mu sync.Mutex
	m  map[string]Location
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore { return &MemoryStore{m: map[string]Location{}} }

// Put implements Store.
func (s *MemoryStore) Put(_ context.Context, loc Location) (PutResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.m[loc.UserID]; ok && old.Seq >= loc.Seq {
		return PutResult{StoredSeq: old.Seq}, nil
	}
	s.m[loc.UserID] = loc
	return PutResult{Applied: true}, nil
}

// Get implements Store.
func (s *MemoryStore) Get(_ context.Context, userID string) (Location, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.m[userID]
	return l, ok, nil
}

// Len returns the number of users stored.
func (s *MemoryStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// Config configures a Function: what every consumer function sets (its Name defaults to
// "lastlocation") and the store.
type Config struct {
	consumer.FunctionSetup
	Store Store // required
}

// Stats are totals since New.
type Stats struct{ Applied, Stale, Duplicates, Invalid int64 }

// Function is the lastlocation consumer.
type Function struct {
	store Store
	log   *slog.Logger
	now   func() time.Time
	reg   *emf.Registry
	proc  *consumer.Processor

	stale, dups, invalid *emf.Counter
	mu                   sync.Mutex
	stats                Stats
}

// New returns a Function. It panics without a Store.
func New(cfg Config) *Function {
	if cfg.Store == nil {
		panic("lastlocation: no Store")
	}
	if cfg.Name == "" {
		cfg.Name = "lastlocation"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	f := &Function{store: cfg.Store, now: cfg.Now}
	f.proc, f.reg, f.log = cfg.FunctionSetup.Build(f.HandleRecord)
	f.stale = f.reg.Counter("Stale", emf.Count)
	f.dups = f.reg.Counter("Duplicates", emf.Count)
	f.invalid = f.reg.Counter("Invalid", emf.Count)
	return f
}

// Handle is the Lambda handler: lambda.Start(f.Handle).
func (f *Function) Handle(ctx context.Context, ev events.KinesisEvent) (events.KinesisEventResponse, error) {
	return f.proc.Handle(ctx, ev)
}

// Registry returns the metric registry.
func (f *Function) Registry() *emf.Registry { return f.reg }

// Stats returns the totals.
func (f *Function) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// ErrInvalid wraps the reason a record is not a usable location message.
var ErrInvalid = errors.New("lastlocation: invalid location message")

// HandleRecord stores one location update.
func (f *Function) HandleRecord(ctx context.Context, r consumer.Record) error {
	m, err := location.Parse(r.Data)
	if err == nil && m.Seq == 0 {
		err = errors.New("no seq")
	}
	if err != nil {
		f.invalid.Inc()
		f.count(func(s *Stats) { s.Invalid++ })
		return consumer.Permanent(fmt.Errorf("%w: %v", ErrInvalid, err))
	}
	res, err := f.store.Put(ctx, Location{
		UserID: m.UserID, Seq: m.Seq, TS: m.TS, Lat: m.Lat, Lon: m.Lon, Accuracy: m.Accuracy,
		Speed: m.Speed, Heading: m.Heading, ShardID: r.ShardID, SequenceNumber: r.SequenceNumber,
		SubSequence: r.SubSequence, UpdatedAt: f.now().UnixMilli(),
	})
	if err != nil {
		return fmt.Errorf("lastlocation: store %s seq %d: %w", m.UserID, m.Seq, err)
	}
	switch {
	case res.Applied:
		f.count(func(s *Stats) { s.Applied++ })
	case res.StoredSeq == m.Seq:
		f.dups.Inc()
		f.count(func(s *Stats) { s.Duplicates++ })
		f.log.InfoContext(ctx, "duplicate update ignored", "user_id", m.UserID, "seq", m.Seq,
			"shard", r.ShardID, "sequence_number", r.SequenceNumber, "sub_sequence", r.SubSequence)
	default:
		f.stale.Inc()
		f.count(func(s *Stats) { s.Stale++ })
		f.log.WarnContext(ctx, "stale update ignored: the stored location is newer", "user_id", m.UserID,
			"seq", m.Seq, "stored_seq", res.StoredSeq, "shard", r.ShardID, "sequence_number", r.SequenceNumber)
	}
	return nil
}

func (f *Function) count(fn func(*Stats)) {
	f.mu.Lock()
	fn(&f.stats)
	f.mu.Unlock()
}
