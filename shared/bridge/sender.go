package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"
	"github.com/nsqio/go-nsq"
)

// PutRecords request limits (the SDK documents 10 MiB per request, partition keys included, and
// per record). Records are never larger than maxRequestBytes (Options.Validate and
// Bridge.describe cap the record limit), so any entry fits in an empty request.
const (
	maxRequestEntries = 500
	maxRequestBytes   = 10 << 20
)

// sendLoop packs ready entries of many lanes into PutRecords requests and sends them, at most
// MaxRequestsInFlight at a time. It wakes on a kick (an entry sealed, a request completed) or when
// the earliest lane backoff expires.
func (b *Bridge) sendLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var wake time.Time
		for {
			select {
			case b.slots <- struct{}{}:
			default: // all request slots busy: a completion will kick us
				goto wait
			}
			req, next := b.buildRequest(time.Now())
			if len(req) == 0 {
				<-b.slots
				wake = next
				break
			}
			b.reqs.Add(1)
			go b.send(ctx, req)
		}
	wait:
		if !wake.IsZero() {
			timer.Reset(max(time.Until(wake), time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return
		case <-b.kick:
		case <-timer.C:
		}
	}
}

// buildRequest picks the entries to send now (strict: the head entry of each free lane), up to the
// PutRecords limits, starting where the previous request stopped so no lane starves. It also
// returns the earliest time a lane in backoff becomes free.
func (b *Bridge) buildRequest(now time.Time) (req []*entry, wake time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fatal != nil || b.gone {
		return nil, wake
	}
	size, n := 0, len(b.lanes)
	i := 0
lanes:
	for ; i < n; i++ {
		l := b.lanes[(b.rr+i)%n]
		if len(l.queue) == 0 || l.retired || l.paused {
			continue
		}
		if now.Before(l.retryAt) {
			if wake.IsZero() || l.retryAt.Before(wake) {
				wake = l.retryAt
			}
			continue
		}
		if b.o.Ordering == Strict && l.flying > 0 {
			continue
		}
		for _, e := range l.queue {
			if e.inFlight {
				continue
			}
			// An entry that does not fit ends the request, and the next one starts with it: it is
			// then first, and an entry always fits in an empty request.
			if len(req) == maxRequestEntries || (len(req) > 0 && size+e.size() > maxRequestBytes) {
				break lanes
			}
			e.inFlight = true
			l.flying++
			req = append(req, e)
			size += e.size()
			if b.o.Ordering == Strict {
				break
			}
		}
	}
	if n > 0 {
		b.rr = (b.rr + i) % n
	}
	return req, wake
}

// send writes one request and applies its outcome.
func (b *Bridge) send(ctx context.Context, req []*entry) {
	defer b.reqs.Done()
	in := &kinesis.PutRecordsInput{Records: make([]types.PutRecordsRequestEntry, len(req))}
	if b.o.streamIsARN() {
		in.StreamARN = aws.String(b.o.Stream)
	} else {
		in.StreamName = aws.String(b.o.Stream)
	}
	for i, e := range req {
		r := &in.Records[i]
		r.Data, r.PartitionKey = e.rec.Data, aws.String(e.rec.PartitionKey)
		if e.rec.ExplicitHashKey != "" {
			r.ExplicitHashKey = aws.String(e.rec.ExplicitHashKey)
		}
		if e.attempts > 0 {
			b.m.retried()
		}
	}
	cctx, cancel := context.WithTimeout(ctx, b.o.PutTimeout)
	start := time.Now()
	out, err := b.kc.PutRecords(cctx, in)
	cancel()
	b.m.putLatency.Observe(time.Since(start).Seconds())
	b.m.putEntries.Add(float64(len(req)))
	if err == nil && len(out.Records) != len(req) {
		err = fmt.Errorf("PutRecords returned %d results for %d entries", len(out.Records), len(req))
	}
	b.complete(req, out, err)
	<-b.slots
	b.signal(b.kick)
}

// complete applies a PutRecords outcome: accepted entries leave their lane and their messages are
// FINished; failed entries stay at their place and their lane backs off.
func (b *Bridge) complete(req []*entry, out *kinesis.PutRecordsOutput, err error) {
	now := time.Now()
	var acked []*nsq.Message
	failed := map[string]int{}
	var firstMsg string
	misrouted := false

	b.mu.Lock()
	for i, e := range req {
		l := e.lane
		e.inFlight = false
		l.flying--
		code, shardID := "", ""
		switch {
		case err != nil:
			code = errorCode(err)
		case out.Records[i].ErrorCode != nil:
			code = aws.ToString(out.Records[i].ErrorCode)
			if firstMsg == "" {
				firstMsg = aws.ToString(out.Records[i].ErrorMessage)
			}
		default:
			shardID = aws.ToString(out.Records[i].ShardId)
		}
		if code != "" {
			failed[code]++
			e.attempts++
			e.maybeWritten = e.maybeWritten || err != nil
			l.retryAt = now.Add(l.bo.NextBackOff())
		} else {
			l.queue = slices.DeleteFunc(l.queue, func(x *entry) bool { return x == e })
			l.bo.Reset()
			l.retryAt = time.Time{}
			if shardID != l.shard.ID {
				// Our shard map is stale (a reshard): the record is durable on the shard Kinesis
				// chose for its explicit hash key. Pause the lane (at most one misplaced record
				// per lane) and refresh the map before sending more.
				b.m.misrouted.Inc()
				misrouted = true
				l.paused = true
				b.stale = true
				for _, r := range e.msgs {
					b.sticky[r.hash.Low64()] = stickyKey{shard: shardID, last: now}
				}
				b.log.Info("record landed on another shard than predicted; refreshing the shard map",
					"predicted", l.shard.ID, "actual", shardID)
			}
			if !b.gone {
				for _, r := range e.msgs {
					acked = r.s.deliveries(acked)
					b.wrote(r.s.m, now)
				}
			}
			b.m.aggregates.Inc()
			b.m.shardMessages.WithLabelValues(shardID).Add(float64(len(e.msgs)))
			b.m.bytesOut.Add(float64(e.size()))
			b.m.userRecords.Observe(float64(len(e.msgs)))
			b.m.buffered.Sub(float64(e.bytes))
		}
		// The lane may have been waiting for this entry: seal its open aggregate if it is due.
		if len(l.queue) == 0 && len(l.open) > 0 && b.free(l, now) &&
			(b.stop || now.Sub(l.since) >= b.o.MaxBufferedTime || b.held.Load() >= b.threshold) {
			b.seal(l)
		}
	}
	if b.pending != nil {
		b.maybeFinishReshard(now)
	}
	b.mu.Unlock()

	// acked holds deliveries: a message nsqd delivered twice while held appears twice (both are
	// FINished: nsqd takes the FIN of the delivery it has out, go-nsq needs both answered), but is
	// counted and timed once. Ids are unique per nsqd only: the same id from another nsqd is
	// another message.
	messages := 0
	for i, m := range acked {
		if i == 0 || acked[i-1].ID != m.ID || acked[i-1].NSQDAddress != m.NSQDAddress {
			messages++
			b.m.ackLatencyOf(now.Sub(time.Unix(0, m.Timestamp)))
		}
		m.Finish()
	}
	if len(acked) > 0 {
		b.m.acked(messages)
		b.m.inFlight.Set(float64(b.held.Add(-int64(len(acked)))))
	}
	switch {
	case err != nil:
		b.m.putCalls.WithLabelValues("error").Inc()
	case len(failed) > 0:
		b.m.putCalls.WithLabelValues("partial").Inc()
	default:
		b.m.putCalls.WithLabelValues("ok").Inc()
	}
	if len(failed) > 0 {
		b.m.failedEntries(failed)
		n := 0
		for _, c := range failed {
			n += c
		}
		b.failures.note(b.log, failed, n, len(req), firstErrorText(err, firstMsg))
	}
	if isFatal(err) {
		b.setFatal(fmt.Errorf("bridge: stream %s: %w", b.o.Stream, err))
	}
	if misrouted {
		b.signal(b.refresh)
	}
}

// errorCode names a whole-request failure the way per-entry failures are named.
func errorCode(err error) string {
	var ae smithy.APIError
	switch {
	case errors.As(err, &ae):
		return ae.ErrorCode()
	case errors.Is(err, context.DeadlineExceeded):
		return "Timeout"
	case errors.Is(err, context.Canceled):
		return "Canceled"
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return "NetworkError"
	}
	return "RequestError"
}

// isFatal reports errors that retrying cannot fix: the stream is gone.
func isFatal(err error) bool {
	var nf *types.ResourceNotFoundException
	return err != nil && errors.As(err, &nf)
}

// failureLog reports failed entries at most once per failureLogEvery, with the counts since the
// previous report: under sustained throttling one line per request would flood the logs (the
// metrics count every entry).
type failureLog struct {
	mu       sync.Mutex
	last     time.Time
	codes    map[string]int
	failed   int
	requests int
}

const failureLogEvery = 5 * time.Second

func (f *failureLog) note(log *slog.Logger, codes map[string]int, failed, entries int, firstErr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.codes == nil {
		f.codes = map[string]int{}
	}
	for c, n := range codes {
		f.codes[c] += n
	}
	f.failed += failed
	f.requests++
	if time.Since(f.last) < failureLogEvery {
		return
	}
	log.Warn("PutRecords entries failed; retrying with backoff", "failed", f.failed, "requests", f.requests,
		"codes", summarize(f.codes), "last_request_entries", entries, "last_error", firstErr)
	f.last, f.failed, f.requests = time.Now(), 0, 0
	clear(f.codes)
}

func summarize(m map[string]int) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+strconv.Itoa(m[k]))
	}
	return strings.Join(parts, ",")
}

func firstErrorText(err error, msg string) string {
	if err != nil {
		return err.Error()
	}
	return msg
}
