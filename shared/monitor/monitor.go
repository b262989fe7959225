// Package monitor is the production flow's health signal, run as the `monitor` Lambda function
// on the location stream: the end-to-end latency distribution of the location messages (from
// their `ts` to processing) and a per-key order check — within a shard, the `seq` counter of
// each user must increase.
//
// Metrics (EMF, namespace NSQK/Consumer, dimension Function): the consumer metrics of package
// consumer plus
//
//   - OrderViolations (Count): a user's seq lower than one already seen in the shard;
//   - Duplicates (Count): a user's seq equal to the last one seen (a redelivery, at least once);
//   - Gaps (Count): a user's seq more than one above the last one seen (messages missing in this
//     shard: dropped, sent to an on-failure destination, or routed to another shard);
//   - Malformed (Count): records that are not location messages.
//
// The monitor is an observer: a malformed message is counted, logged and failed as Permanent,
// so that the processor sends it to the function's dead-letter queue and goes on: a poison
// message cannot blind the health signal by blocking its shard, and it is kept with its reason.
// (Without a dead-letter queue it stops the batch like any failure: nothing is dropped.) Per-user state lives in
// the function's memory: it survives warm invocations only, which is enough for a signal (a cold
// start or a reshard just starts the comparison again).
package monitor

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"

	"github.com/aws/aws-lambda-go/events"

	"github.com/nsqk/nsqk/shared/consumer"
	"github.com/nsqk/nsqk/shared/emf"
)

// Namespace is the EMF namespace of every consumer function.
const Namespace = consumer.Namespace

// Config configures a Monitor: what every consumer function sets; its Name defaults to "monitor".
type Config struct {
	consumer.FunctionSetup
}

// Stats are the order-check totals since New.
type Stats struct {
	Records, OrderViolations, Duplicates, Gaps, Malformed int64
	Keys                                                  int // (shard, user) pairs tracked
}

// Monitor checks order and latency. Safe for concurrent use (batches of different shards).
type Monitor struct {
	log  *slog.Logger
	reg  *emf.Registry
	proc *consumer.Processor

	violations, duplicates, gaps, malformed *emf.Counter

	mu    sync.Mutex
	last  map[string]uint64 // shard + "/" + user -> last seq seen
	stats Stats
}

// New returns a Monitor.
func New(cfg Config) *Monitor {
	if cfg.Name == "" {
		cfg.Name = "monitor"
	}
	m := &Monitor{last: map[string]uint64{}}
	m.proc, m.reg, m.log = cfg.FunctionSetup.Build(m.HandleRecord)
	m.violations = m.reg.Counter("OrderViolations", emf.Count)
	m.duplicates = m.reg.Counter("Duplicates", emf.Count)
	m.gaps = m.reg.Counter("Gaps", emf.Count)
	m.malformed = m.reg.Counter("Malformed", emf.Count)
	return m
}

// Handle is the Lambda handler: lambda.Start(m.Handle).
func (m *Monitor) Handle(ctx context.Context, ev events.KinesisEvent) (events.KinesisEventResponse, error) {
	return m.proc.Handle(ctx, ev)
}

// Registry returns the metric registry (to add metrics or flush from tests).
func (m *Monitor) Registry() *emf.Registry { return m.reg }

// Stats returns the totals.
func (m *Monitor) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.stats
	s.Keys = len(m.last)
	return s
}

type message struct {
	UserID string `json:"user_id"`
	Seq    uint64 `json:"seq"`
	TS     int64  `json:"ts"`
}

// HandleRecord checks one location message. It fails, permanently, only a record that is not a
// location message.
func (m *Monitor) HandleRecord(ctx context.Context, r consumer.Record) error {
	var msg message
	if err := json.Unmarshal(r.Data, &msg); err != nil || msg.UserID == "" || msg.Seq == 0 {
		m.malformed.Inc()
		m.mu.Lock()
		m.stats.Malformed++
		m.mu.Unlock()
		reason := "no user_id or seq"
		if err != nil {
			reason = err.Error()
		}
		m.log.WarnContext(ctx, "not a location message", "shard", r.ShardID, "sequence_number", r.SequenceNumber,
			"sub_sequence", r.SubSequence, "reason", reason, "bytes", len(r.Data))
		return consumer.Permanent(fmt.Errorf("not a location message: %s", reason))
	}
	key := r.ShardID + "/" + msg.UserID
	m.mu.Lock()
	prev, seen := m.last[key]
	m.stats.Records++
	kind := ""
	switch {
	case !seen || msg.Seq == prev+1:
	case msg.Seq < prev:
		kind = "order violation"
		m.stats.OrderViolations++
	case msg.Seq == prev:
		kind = "duplicate"
		m.stats.Duplicates++
	default:
		kind = "gap"
		m.stats.Gaps++
	}
	if !seen || msg.Seq > prev {
		m.last[key] = msg.Seq
	}
	m.mu.Unlock()
	switch kind {
	case "order violation":
		m.violations.Inc()
		m.log.ErrorContext(ctx, "order violation: seq went back", "shard", r.ShardID, "user_id", msg.UserID,
			"seq", msg.Seq, "previous_seq", prev, "sequence_number", r.SequenceNumber, "sub_sequence", r.SubSequence)
	case "duplicate":
		m.duplicates.Inc()
		m.log.InfoContext(ctx, "duplicate delivery", "shard", r.ShardID, "user_id", msg.UserID, "seq", msg.Seq,
			"sequence_number", r.SequenceNumber, "sub_sequence", r.SubSequence)
	case "gap":
		m.gaps.Inc()
		m.log.WarnContext(ctx, "gap in seq", "shard", r.ShardID, "user_id", msg.UserID, "seq", msg.Seq,
			"previous_seq", prev, "missing", msg.Seq-prev-1)
	}
	return nil
}
