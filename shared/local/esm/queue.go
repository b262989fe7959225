package esm

import (
	"context"
	"sync"
	"time"
)

// queue hands a shard reader's records to one lane. push blocks while the queue holds cap
// records or more (back-pressure on the reader while a lane retries).
type queue struct {
	mu       sync.Mutex
	items    []item
	bytes    int
	closed   bool
	cap      int
	notEmpty chan struct{} // signalled (non-blocking) when items are added or the queue closes
	notFull  chan struct{} // signalled when items are taken
}

func newQueue(cap int) *queue {
	return &queue{cap: cap, notEmpty: make(chan struct{}, 1), notFull: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// push appends items, waiting for room; false if ctx ended.
func (q *queue) push(ctx context.Context, items []item) bool {
	for {
		q.mu.Lock()
		if len(q.items) < q.cap {
			q.items = append(q.items, items...)
			for _, it := range items {
				q.bytes += recordSize(it)
			}
			q.mu.Unlock()
			signal(q.notEmpty)
			return true
		}
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return false
		case <-q.notFull:
		}
	}
}

func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	signal(q.notEmpty)
}

// waitFor waits until the queue holds at least n records, or is closed (true if it still holds
// some), or until (a non-zero) deadline passes (true if it holds some), or ctx ends (false).
func (q *queue) waitFor(ctx context.Context, n int, deadline time.Time) bool {
	var timeout <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		timeout = t.C
	}
	for {
		q.mu.Lock()
		l, closed := len(q.items), q.closed
		q.mu.Unlock()
		if l >= n || (closed && l > 0) {
			return true
		}
		if closed {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-timeout:
			return l > 0
		case <-q.notEmpty:
		}
	}
}

// take removes up to n records whose event payload stays within maxBytes (at least one).
func (q *queue) take(n, maxBytes int) []item {
	q.mu.Lock()
	k, size := 0, 0
	for k < len(q.items) && k < n {
		s := recordSize(q.items[k])
		if k > 0 && size+s > maxBytes {
			break
		}
		size += s
		k++
	}
	out := make([]item, k)
	copy(out, q.items[:k])
	q.items = q.items[k:]
	q.bytes -= size
	closed := q.closed
	q.mu.Unlock()
	signal(q.notFull)
	if closed {
		signal(q.notEmpty) // let the lane see the rest or the end
	}
	return out
}

// recordSize estimates a record's share of the event JSON: base64 data, keys and the envelope.
func recordSize(it item) int {
	r := it.rec
	n := (len(r.Data) + 2) / 3 * 4
	if r.PartitionKey != nil {
		n += len(*r.PartitionKey)
	}
	return n + 2*len(deref(r.SequenceNumber)) + 400
}
