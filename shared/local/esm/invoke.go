package esm

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/nsqk/nsqk/shared/consumer"
)

// outcome of one invocation.
type outcome int

const (
	succeeded outcome = iota
	partial           // valid batchItemFailures: failed from index k on
	failed            // function error, or a response Lambda treats as a complete failure
)

type sub struct {
	items    []item
	attempts int // failed invocations of this (sub-)batch
}

// process applies the ESM's error handling to one batch until every record is handled (or ctx
// ends).
func (m *Mapping) process(ctx context.Context, sr *shardRun, batch []item, h lambda.Handler, hmu *sync.Mutex, log *slog.Logger) {
	pending := []sub{{items: batch}}
	var last invocation
	for len(pending) > 0 {
		if ctx.Err() != nil {
			return
		}
		cur := &pending[0]
		if age := m.cfg.MaximumRecordAge; age > 0 {
			now := m.cfg.Now()
			cut := 0
			for cut < len(cur.items) && now.Sub(arrival(cur.items[cut].rec)) > age {
				cut++
			}
			if cut > 0 {
				m.discard(sr, cur.items[:cut], "RecordAgeExceeded", cur.attempts, last, log)
				cur.items = cur.items[cut:]
				if len(cur.items) == 0 {
					pending = pending[1:]
					continue
				}
			}
		}
		last = m.invoke(ctx, sr, cur.items, h, hmu, log)
		if ctx.Err() != nil && last.outcome != succeeded {
			return // shutting down: not a function failure
		}
		k := 0
		switch last.outcome {
		case succeeded:
			m.markDone(sr, cur.items)
			pending = pending[1:]
			continue
		case partial:
			k = last.failedAt
		}
		if k > 0 { // progress: checkpoint before the failed record, retry the rest
			m.markDone(sr, cur.items[:k])
			cur.items = cur.items[k:]
		} else if m.cfg.BisectBatchOnFunctionError && len(cur.items) > 1 {
			n, h := len(cur.items), len(cur.items)/2
			halves := []sub{{items: cur.items[:h]}, {items: cur.items[h:]}}
			pending = append(halves, pending[1:]...)
			m.update(func(s *Stats) { s.Bisections++ })
			log.Info("bisecting batch", "size", n, "first_sequence_number", aws.ToString(halves[0].items[0].rec.SequenceNumber))
			continue
		}
		cur.attempts++
		if limit := m.cfg.MaximumRetryAttempts; limit >= 0 && cur.attempts > limit {
			m.discard(sr, cur.items, "RetryAttemptsExhausted", cur.attempts, last, log)
			pending = pending[1:]
			continue
		}
		m.update(func(s *Stats) { s.Retries++ })
		delay := m.cfg.RetryBackoff << min(cur.attempts-1, 16)
		delay = min(delay, 5*time.Second)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

type invocation struct {
	outcome   outcome
	failedAt  int
	errorType string // "" | "Unhandled" | "TimedOut"
	invoked   bool
}

func (m *Mapping) invoke(ctx context.Context, sr *shardRun, items []item, h lambda.Handler, hmu *sync.Mutex, log *slog.Logger) invocation {
	recs := make([]types.Record, len(items))
	seqs := make([]string, len(items))
	for i, it := range items {
		recs[i] = it.rec
		seqs[i] = aws.ToString(it.rec.SequenceNumber)
	}
	payload, err := BuildEvent(sr.id, m.StreamARN(), recs, EventOptions{})
	if err != nil {
		log.Error("cannot build the event", "error", err.Error())
		return invocation{outcome: failed, errorType: "Unhandled"}
	}
	sr.mu.Lock()
	firstInvoke := sr.first
	sr.first = false
	sr.mu.Unlock()
	now := time.Now()
	m.update(func(s *Stats) {
		s.Invocations++
		if firstInvoke {
			sh := s.Shards[sr.id]
			sh.FirstInvokeAt = now
			s.Shards[sr.id] = sh
		}
	})
	if hmu != nil {
		hmu.Lock()
	}
	res := consumer.Invoke(ctx, h, payload, m.cfg.FunctionName, m.cfg.FunctionTimeout)
	if hmu != nil {
		hmu.Unlock()
	}
	inv := invocation{invoked: true, errorType: res.ErrorType}
	if res.Err != nil {
		if ctx.Err() == nil {
			m.update(func(s *Stats) { s.FunctionErrors++ })
			log.Warn("function error", "request_id", res.RequestID, "type", res.ErrorType, "error", res.Err.Error(),
				"first_sequence_number", seqs[0], "size", len(items))
		}
		inv.outcome = failed
		return inv
	}
	idx, whole, reason := partialResult(res.Response, seqs)
	if !m.cfg.ReportBatchItemFailures {
		if idx >= 0 || whole {
			log.Warn("the function reported batch item failures but ReportBatchItemFailures is off: Lambda ignores them and the batch counts as a success",
				"request_id", res.RequestID)
		}
		inv.outcome = succeeded
		return inv
	}
	switch {
	case whole:
		log.Warn("invalid partial batch response: the whole batch failed", "reason", reason, "request_id", res.RequestID)
		inv.outcome = failed
	case idx >= 0:
		m.update(func(s *Stats) { s.PartialFailures++ })
		log.Info("partial batch failure", "failed_sequence_number", seqs[idx], "index", idx, "size", len(items))
		inv.outcome, inv.failedAt = partial, idx
	default:
		inv.outcome = succeeded
	}
	return inv
}
