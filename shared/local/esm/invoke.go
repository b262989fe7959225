package esm

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/nsqk/nsqk/shared/consumer"
)

// Factory starts one function instance (one execution environment, with its own memory) and
// returns its handler, which the emulator invokes through aws-lambda-go's JSON path; for a
// handler function fn, return lambda.NewHandler(fn). An instance serves one invocation at a time.
//
// The emulator starts an instance for each lane (a concurrent invocation of a shard) when the
// lane first invokes, and a new one after the function timed out or crashed: "If the Lambda
// function crashes or times out during the Invoke phase, Lambda resets the execution environment"
// (Lambda developer guide, "Understanding the Lambda execution environment lifecycle", failures
// during the invoke phase). With Config.InstancePerInvocation every invocation gets a new one.
type Factory func() lambda.Handler

// Shared returns a Factory whose instances all call the one handler fn (what lambda.Start
// accepts: a handler function, or a lambda.Handler). Its memory is then shared by every lane and
// survives timeouts, which Lambda never provides: use it only for a function whose correctness
// does not rest on its memory, or to sum statistics over all instances.
//
// A lambda.Handler is invoked one call at a time: the handlers lambda.NewHandler builds are not
// safe for concurrent Invoke calls (Invoke returns the bytes of a pooled buffer after putting it
// back in the pool, aws-lambda-go v1.55.1 lambda/handler.go). A handler function gets its own
// lambda.NewHandler per instance and is called concurrently.
func Shared(fn any) Factory {
	if h, ok := fn.(lambda.Handler); ok {
		s := &serialized{h: h}
		return func() lambda.Handler { return s }
	}
	return func() lambda.Handler { return lambda.NewHandler(fn) }
}

type serialized struct {
	mu sync.Mutex
	h  lambda.Handler
}

func (s *serialized) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out, err := s.h.Invoke(ctx, payload)
	return append([]byte(nil), out...), err // copied under the lock: the buffer goes back to a pool
}

// instance is one started function instance. It notes a panic that escapes the handler (the
// invocation still reports it as a function error): aws-lambda-go's runtime exits the process
// then (lambda/invoke_loop.go, ShouldExit), so Lambda starts a new environment.
type instance struct {
	h       lambda.Handler
	crashed atomic.Bool
}

func (in *instance) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	defer func() {
		if v := recover(); v != nil {
			in.crashed.Store(true)
			panic(v)
		}
	}()
	return in.h.Invoke(ctx, payload)
}

// lane is one concurrent invocation slot of a shard, with the function instance serving it.
type lane struct {
	q    *queue
	inst *instance
}

// instanceFor returns the lane's instance, starting one when it has none (or always, with
// InstancePerInvocation).
func (m *Mapping) instanceFor(ln *lane) *instance {
	if ln.inst == nil || m.cfg.InstancePerInvocation {
		ln.inst = &instance{h: m.newFn()}
		m.update(func(s *Stats) { s.Instances++ })
	}
	return ln.inst
}

// outcome of one invocation.
type outcome int

const (
	succeeded outcome = iota
	partial           // valid batchItemFailures: failed from index k on
	failed            // function error, or a response Lambda treats as a complete failure
)

type sub struct {
	// attempts counts the failed invocations charged against MaximumRetryAttempts. Bisected
	// halves inherit their parent's count (AWS does not say whether they start afresh; the
	// pessimistic reading is that they do not).
	attempts int
	invokes  int // invocations of these records so far (approximateInvokeCount)
	items    []item
	dup      bool // already delivered a second time (Faults.Duplicate)
	throttle int  // throttled invocations in a row
}

// process applies the ESM's error handling to one batch until every record is handled (or ctx
// ends). Each rule cites its source; where AWS documents nothing, the reading that discards more
// or retries more is taken, and said so.
func (m *Mapping) process(ctx context.Context, sr *shardRun, batch []item, ln *lane, log *slog.Logger) {
	pending := []sub{{items: batch}}
	var last invocation
	var disc discards
	defer func() { m.flushDiscards(sr, batch, &disc, log) }()
	for len(pending) > 0 {
		if ctx.Err() != nil {
			return
		}
		cur := &pending[0]
		// MaximumRecordAgeInSeconds: records older than this are discarded before they are
		// sent ("Lambda parameters for Amazon Kinesis Data Streams event source mappings"; the
		// 2019 launch note: "Your Lambda function can skip processing a data record when it has
		// reached its Maximum Record Age").
		if age := m.cfg.MaximumRecordAge; age > 0 {
			now := m.cfg.Now()
			cut := 0
			for cut < len(cur.items) && now.Sub(arrival(cur.items[cut].rec)) > age {
				cut++
			}
			if cut > 0 {
				m.discard(sr, &disc, cur.items[:cut], ConditionRecordAge, cur.invokes, last, log)
				cur.items = cur.items[cut:]
				if len(cur.items) == 0 {
					pending = pending[1:]
					continue
				}
			}
		}
		first := aws.ToString(cur.items[0].rec.SequenceNumber)
		// Throttles: retried until the records expire, at no retry cost ("Before invocation",
		// "Retain discarded batch records for a Kinesis Data Streams event source in Lambda").
		if f := m.cfg.Faults.Throttle; f != nil && f(sr.id, first) {
			cur.throttle++
			m.update(func(s *Stats) { s.Throttles++ })
			log.Info("invocation throttled", "first_sequence_number", first, "size", len(cur.items), "in_a_row", cur.throttle)
			if !m.sleep(ctx, m.backoff(cur.throttle)) {
				return
			}
			continue
		}
		cur.throttle = 0
		last = m.invoke(ctx, sr, cur.items, ln, log)
		cur.invokes++
		if ctx.Err() != nil && last.outcome != succeeded {
			return // shutting down: not a function failure
		}
		switch last.outcome {
		case succeeded:
			if f := m.cfg.Faults.Duplicate; f != nil && !cur.dup && f(sr.id, first) {
				// At least once: the same batch once more, its outcome handled like any other.
				cur.dup = true
				m.update(func(s *Stats) { s.Duplicates++ })
				log.Info("delivering the batch again (duplicate)", "first_sequence_number", first, "size", len(cur.items))
				continue
			}
			m.markDone(sr, cur.items)
			pending = pending[1:]
			continue
		case partial:
			// "When a batch partial success response is received and both
			// BisectBatchOnFunctionError and ReportBatchItemFailures are turned on, the batch is
			// bisected at the returned sequence number and Lambda retries only the remaining
			// records" ("Configuring partial batch response with Kinesis Data Streams and Lambda").
			// At index 0 nothing is split: the same records are retried until
			// MaximumRetryAttempts, then all of them are discarded.
			if k := last.failedAt; k > 0 {
				m.markDone(sr, cur.items[:k])
				cur.items = cur.items[k:]
			}
			// Whether a partial success counts as a retry attempt is not documented; it is
			// counted here (the pessimistic reading: records behind slow ones can run out of
			// attempts).
		case failed:
			// "If the invocation fails and BisectBatchOnFunctionError is turned on, the batch is
			// bisected regardless of your ReportBatchItemFailures setting" (same page), and
			// "Splitting batches doesn't consume the retry quota" ("Retain discarded batch
			// records..."). Only a function error (an error returned, a crash, a timeout) splits:
			// an invalid partial response is "a complete failure" and is retried whole (the
			// docs do not say it bisects: the pessimistic reading).
			if last.errorType != "" && m.cfg.BisectBatchOnFunctionError && len(cur.items) > 1 {
				n, h := len(cur.items), len(cur.items)/2
				halves := []sub{
					{items: cur.items[:h], attempts: cur.attempts, invokes: cur.invokes},
					{items: cur.items[h:], attempts: cur.attempts, invokes: cur.invokes},
				}
				pending = append(halves, pending[1:]...)
				m.update(func(s *Stats) { s.Bisections++ })
				log.Info("bisecting batch", "size", n, "first_sequence_number", first)
				continue
			}
		}
		// MaximumRetryAttempts: "the number of times to retry a record before it is bypassed"
		// (-1: until the record expires), so MaximumRetryAttempts+1 counted invocations at most
		// ("Lambda parameters for Amazon Kinesis Data Streams event source mappings").
		cur.attempts++
		if limit := m.cfg.MaximumRetryAttempts; limit >= 0 && cur.attempts > limit {
			m.discard(sr, &disc, cur.items, ConditionRetriesExhausted, cur.invokes, last, log)
			pending = pending[1:]
			continue
		}
		m.update(func(s *Stats) { s.Retries++ })
		if !m.sleep(ctx, m.backoff(cur.attempts)) {
			return
		}
	}
}

// backoff is the delay before the n-th retry: RetryBackoff doubling, at most 5 s. (AWS does not
// document the delay between stream retries.)
func (m *Mapping) backoff(n int) time.Duration {
	return min(m.cfg.RetryBackoff<<min(max(n-1, 0), 16), 5*time.Second)
}

func (m *Mapping) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

type invocation struct {
	outcome   outcome
	failedAt  int
	errorType string // "" | "Unhandled" | "TimedOut"
	invoked   bool
}

func (m *Mapping) invoke(ctx context.Context, sr *shardRun, items []item, ln *lane, log *slog.Logger) invocation {
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
	inst := m.instanceFor(ln)
	res := consumer.Invoke(ctx, inst, payload, m.cfg.FunctionName, m.cfg.FunctionTimeout)
	if res.ErrorType == "TimedOut" || inst.crashed.Load() {
		ln.inst = nil // the environment is reset: the next invocation starts a new instance
		m.update(func(s *Stats) { s.InstanceResets++ })
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
