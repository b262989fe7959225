package esm

import (
	"encoding/json"
	"log/slog"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/nsqk/nsqk/shared/consumer"
	"github.com/nsqk/nsqk/shared/onfailure"
)

// Conditions of an invocation record (requestContext.condition).
const (
	// ConditionRetriesExhausted is the condition of the AWS example record ("Retain discarded
	// batch records for a Kinesis Data Streams event source in Lambda", example invocation
	// record).
	ConditionRetriesExhausted = "RetryAttemptsExhausted"
	// ConditionRecordAge is the condition for records older than MaximumRecordAge. The AWS docs
	// show no record with it; "RecordAgeExceeded" is what LocalStack's stream poller writes
	// (localstack, services/lambda_/event_source_mapping/pollers/stream_poller.py). Readers
	// should treat any other condition as a discard too.
	ConditionRecordAge = "RecordAgeExceeded"
)

// FailureRecord is the invocation record Lambda sends to an SQS or SNS on-failure destination for
// a Kinesis event source (the product's reader defines it); the OnFailure file holds one per line.
type FailureRecord = onfailure.Record

const isoMillis = "2006-01-02T15:04:05.000Z"

// discards collects the discarded pieces of one batch when ConsolidateDiscards is on.
type discards struct {
	first, last item
	n           int // pieces
	condition   string
	invokes     int
	inv         invocation
	items       []item // marked handled only once their record is written
}

// discard hands items to the on-failure destination and marks them handled. With
// ConsolidateDiscards the invocation record is written when the batch is done (flushDiscards):
// the AWS example record spans a batch of 500 records, so one record may stand for several
// discarded pieces.
func (m *Mapping) discard(sr *shardRun, d *discards, items []item, condition string, invokes int, last invocation, log *slog.Logger) {
	log.Warn("discarding records to the on-failure destination", "condition", condition,
		"start_sequence_number", aws.ToString(items[0].rec.SequenceNumber), "end_sequence_number", aws.ToString(items[len(items)-1].rec.SequenceNumber),
		"records", len(items), "invocations", invokes, "destination", m.cfg.OnFailure)
	if m.cfg.ConsolidateDiscards {
		if d.n == 0 || items[0].idx < d.first.idx {
			d.first = items[0]
		}
		if d.n == 0 || items[len(items)-1].idx > d.last.idx {
			d.last = items[len(items)-1]
		}
		if d.n == 0 || condition == ConditionRetriesExhausted {
			d.condition = condition
		}
		d.n++
		d.invokes = max(d.invokes, invokes)
		if last.invoked {
			d.inv = last
		}
		// The checkpoint passes these records only after the record naming them is written.
		d.items = append(d.items, items...)
		return
	}
	m.writeFailure(sr, items[0], items[len(items)-1], len(items), condition, invokes, last, log)
	m.discarded(sr, items)
}

// discarded counts items as sent to the on-failure destination and marks them handled, once
// the record naming them is written: a reader of the statistics then finds it in the file.
func (m *Mapping) discarded(sr *shardRun, items []item) {
	m.update(func(s *Stats) { s.OnFailureRecords += int64(len(items)) })
	m.markDone(sr, items)
}

// flushDiscards writes the consolidated invocation record of a batch, if any.
func (m *Mapping) flushDiscards(sr *shardRun, batch []item, d *discards, log *slog.Logger) {
	if d.n == 0 {
		return
	}
	size := 0
	for _, it := range batch {
		if it.idx >= d.first.idx && it.idx <= d.last.idx {
			size++
		}
	}
	m.writeFailure(sr, d.first, d.last, size, d.condition, d.invokes, d.inv, log)
	m.discarded(sr, d.items)
	*d = discards{}
}

func (m *Mapping) writeFailure(sr *shardRun, first, lastItem item, size int, condition string, invokes int, last invocation, log *slog.Logger) {
	fr := FailureRecord{
		RequestContext: onfailure.RequestContext{
			RequestID:              consumer.NewUUID(),
			FunctionArn:            consumer.FunctionARN(m.cfg.FunctionName),
			Condition:              condition,
			ApproximateInvokeCount: invokes,
		},
		ResponseContext: onfailure.ResponseContext{ExecutedVersion: "$LATEST"},
		Version:         "1.0",
		Timestamp:       m.cfg.Now().UTC().Format(isoMillis),
		KinesisBatchInfo: onfailure.BatchInfo{
			ShardID:                         sr.id,
			StartSequenceNumber:             aws.ToString(first.rec.SequenceNumber),
			EndSequenceNumber:               aws.ToString(lastItem.rec.SequenceNumber),
			ApproximateArrivalOfFirstRecord: arrival(first.rec).UTC().Format(isoMillis),
			ApproximateArrivalOfLastRecord:  arrival(lastItem.rec).UTC().Format(isoMillis),
			BatchSize:                       size,
			StreamArn:                       m.StreamARN(),
		},
	}
	if last.invoked {
		fr.ResponseContext.StatusCode = 200
		if last.errorType != "" {
			fr.ResponseContext.FunctionError = "Unhandled"
		}
	}
	if m.failFile != nil {
		line, _ := json.Marshal(fr)
		m.failMu.Lock()
		_, err := m.failFile.Write(append(line, '\n'))
		m.failMu.Unlock()
		if err != nil {
			log.Error("on-failure destination write failed", "error", err.Error())
		}
	}
	m.update(func(s *Stats) { s.OnFailureBatches++ })
}

// ReadOnFailure reads the invocation records of an OnFailure file.
func ReadOnFailure(path string) ([]FailureRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return onfailure.Parse(f)
}
