package bridge

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strconv"
	"time"

	"github.com/nsqio/go-nsq"

	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/shardmap"
)

// HandleMessage implements nsq.Handler. It never returns an error: every message is either added
// to a lane (and FINished once durable) or dead-lettered, so go-nsq's requeue/backoff and
// max-attempts paths are never taken.
func (b *Bridge) HandleMessage(m *nsq.Message) error {
	m.DisableAutoResponse()
	now := time.Now() // one clock read per message: they are not cheap on every host
	b.lastIn.Store(now.UnixNano())
	b.m.inFlight.Set(float64(b.held.Add(1)))
	b.m.received(len(m.Body))

	// A message nsqd delivers again (same nsqd and id, Attempts > 1) may still be held here (it
	// timed out, e.g. past nsqd's --max-msg-timeout during a long outage) or have been written
	// before its connection dropped, so that its FIN was lost and nsqd redelivers it after the
	// message timeout (the written memory covers WrittenWindow): either way it must not be written
	// twice. Held messages are looked up by scanning (redeliveries are rare) instead of indexing
	// every message.
	if m.Attempts > 1 {
		b.mu.Lock()
		if s := b.heldSlot(m); s != nil {
			s.more = append(s.more, m)
			b.mu.Unlock()
			b.m.redelivered.WithLabelValues("held").Inc()
			return nil
		}
		addr, g := b.written.get(messageID(m.ID))
		written := g >= 0 && addr == b.addrIndex(m.NSQDAddress)
		b.mu.Unlock()
		if written {
			b.m.redelivered.WithLabelValues("written").Inc()
			b.release(m, true, "", 0)
			return nil
		}
	}

	key, reason, detail, random := b.keys.extract(m.Body)
	if reason == "" && b.o.MaxAttempts > 0 && m.Attempts > b.o.MaxAttempts {
		reason, detail = ReasonMaxAttempts, "delivered "+strconv.Itoa(int(m.Attempts))+" times; --max-attempts is "+strconv.Itoa(int(b.o.MaxAttempts))
	}
	if reason != "" {
		b.dl.send(m, reason, detail)
		return nil
	}
	ref := msgRef{s: &slot{m: m}, key: key, hash: shardmap.HashKey(key)}

	b.mu.Lock()
	if b.gone { // shutdown gave up: do not take anything more
		b.mu.Unlock()
		b.release(m, false, "shutdown_timeout", 0)
		return nil
	}
	// A message older than one already accepted for its key: NSQ redelivered it (crash, timeout,
	// requeue: Attempts > 1) behind newer ones, or, on a first delivery, nsqd interleaved its
	// memory and disk queues (a channel deeper than --mem-queue-size). The bridge keeps the order
	// it receives; only a redelivery is held to the --late-redelivery policy, because only it can
	// be told apart from a message the bridge has simply not seen yet.
	k, newest, fg := ref.hash.Low64(), int64(0), -1
	if !random {
		newest, fg = b.fence.get(k)
	}
	older := fg >= 0 && m.Timestamp < newest
	late := older && m.Attempts > 1
	if older && !late {
		b.m.outOfOrder.Inc()
	}
	if late && b.o.LateRedelivery == LateDeadLetter {
		b.mu.Unlock()
		b.m.late.Inc()
		b.dl.send(m, ReasonLate, "delivery "+strconv.Itoa(int(m.Attempts))+" of a message published "+
			time.Unix(0, newest).Sub(time.Unix(0, m.Timestamp)).String()+" before one of the same key the bridge already accepted")
		return nil
	}
	err := b.add(ref, now)
	if err == nil && !random {
		// Remembered from the last message of the key the bridge accepted, not from its publish
		// time: while a backlog older than the window is caught up, keys must not be forgotten.
		b.fence.put(k, max(newest, m.Timestamp), fg, now)
	}
	b.mu.Unlock()
	if err != nil {
		b.dl.send(m, ReasonTooLarge, err.Error())
	} else if late {
		b.m.late.Inc()
	}
	return nil
}

// messageID returns the 64-bit number an NSQ message id spells in hex. An id that is not hex
// (nsqd issues none) is folded into 64 bits instead; two such ids may then be taken for one.
func messageID(id nsq.MessageID) uint64 {
	var v [8]byte
	if _, err := hex.Decode(v[:], id[:]); err == nil {
		return binary.BigEndian.Uint64(v[:])
	}
	return binary.BigEndian.Uint64(id[:8]) ^ binary.BigEndian.Uint64(id[8:])*0x9E3779B97F4A7C15
}

// addrIndex returns a small number for an nsqd address (b.mu held): the written-message memory
// stores it instead of the address.
func (b *Bridge) addrIndex(addr string) uint32 {
	i, ok := b.addrs[addr]
	if !ok {
		i = uint32(len(b.addrs))
		b.addrs[addr] = i
	}
	return i
}

// wrote remembers that a message was written (b.mu held). The memory is keyed by id and holds the
// address: two nsqd issuing the same id (same --node-id) keep only the later one, so a
// redelivery of the other is written again (a duplicate, never a loss).
func (b *Bridge) wrote(m *nsq.Message, now time.Time) {
	id := messageID(m.ID)
	_, g := b.written.get(id)
	b.written.put(id, b.addrIndex(m.NSQDAddress), g, now)
}

// heldSlot returns the slot of a held message with the id and nsqd of m, or nil (b.mu held).
// Two nsqd with the same --node-id can issue the same id, so the address must match too.
func (b *Bridge) heldSlot(m *nsq.Message) *slot {
	match := func(x *nsq.Message) bool { return x.ID == m.ID && x.NSQDAddress == m.NSQDAddress }
	for _, l := range b.lanes {
		for _, e := range l.queue {
			for _, r := range e.msgs {
				if match(r.s.m) {
					return r.s
				}
			}
		}
		for _, r := range l.open {
			if match(r.s.m) {
				return r.s
			}
		}
	}
	return nil
}

// stickyShard returns the shard index a key sticks to after a reshard misplaced one of its records,
// or -1 (b.mu held).
//
// During a reshard, until the bridge knows the new shard map, a lane's aggregate lands on the child
// shard that holds its explicit hash key, together with the records of keys that belong to the
// sibling child. Consumers read sibling children in parallel, so if such a key's next records went
// to the sibling, a consumer lagging on the first child would handle them before the misplaced
// one. The key therefore keeps going where its misplaced record went until it has been quiet for
// --reshard-quiet; only a consumer that much behind its sibling's could then see it out of order.
func (b *Bridge) stickyShard(k uint64, now time.Time) int {
	sk, ok := b.sticky[k]
	if !ok {
		return -1
	}
	i := b.smap.Index(sk.shard)
	if i < 0 && b.stale {
		// Its shard is not in the map yet: the refreshed map is on its way. Until it is installed
		// the key's messages wait in its paused (or retiring) lane and are re-routed here then.
		return -1
	}
	if i < 0 || now.Sub(sk.last) >= b.o.ReshardQuiet { // its shard closed, or the key went quiet
		delete(b.sticky, k)
		return -1
	}
	sk.last = now
	b.sticky[k] = sk
	return i
}

// housekeepingLoop forgets the fence entries of keys not seen for LateWindow, the messages
// written longer than WrittenWindow ago and the sticky keys quiet for ReshardQuiet, bounding
// these memories by what is active in those windows. Each tick holds b.mu for a few map
// operations per memory, not for work that grows with the number of keys.
func (b *Bridge) housekeepingLoop(ctx context.Context) {
	every(ctx, min(b.o.LateWindow, b.o.ReshardQuiet, b.o.WrittenWindow)/8, b.housekeep)
}

func (b *Bridge) housekeep(now time.Time) {
	b.mu.Lock()
	start := time.Now()
	b.fence.expire(now)
	b.written.expire(now)
	for k, sk := range b.sticky {
		if now.Sub(sk.last) >= b.o.ReshardQuiet {
			delete(b.sticky, k)
		}
	}
	fence, written := b.fence.len(), b.written.len()
	held := time.Since(start)
	b.mu.Unlock()
	b.m.housekeeping.Observe(held.Seconds())
	b.m.memoryEntries.WithLabelValues(memLateWindow).Set(float64(fence))
	b.m.memoryEntries.WithLabelValues(memWritten).Set(float64(written))
}

// every calls fn at each tick of d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func(now time.Time)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			fn(now)
		}
	}
}

// add routes a message to its lane (b.mu held) and seals what is due.
func (b *Bridge) add(r msgRef, now time.Time) error {
	l := b.route(r.hash, now)
	if err := b.addToLane(l, r, now); err != nil {
		return err
	}
	switch {
	case b.held.Load() >= int64(b.o.MaxInFlight):
		// nsqd sends nothing more until something is FINished: send what every free lane has.
		if b.sealDue(now) {
			b.signal(b.kick)
		}
	case b.stop && b.free(l, now):
		b.seal(l)
		b.signal(b.kick)
	}
	return nil
}

// route returns the lane of a hash key in the current shard map.
func (b *Bridge) route(h shardmap.Hash, now time.Time) *lane {
	i := -1
	if len(b.sticky) > 0 {
		i = b.stickyShard(h.Low64(), now)
	}
	if i < 0 {
		i = b.smap.Lookup(h)
	}
	lanes := b.table[i]
	if len(lanes) == 1 {
		return lanes[0]
	}
	return lanes[h.Low64()%uint64(len(lanes))]
}

// addToLane appends a message to the lane's open aggregate, sealing the aggregate first when the
// message does not fit. It fails only for a message that cannot fit in any record.
func (b *Bridge) addToLane(l *lane, r msgRef, now time.Time) error {
	pk, ehk := r.key, ""
	if b.o.RecordKeys == RecordKeysLane {
		pk, ehk = l.pk, l.shard.StartKey
	}
	body := r.s.newest().Body
	err := l.agg.Add(pk, ehk, body)
	if errors.Is(err, kpl.ErrFull) {
		b.seal(l)
		b.signal(b.kick)
		err = l.agg.Add(pk, ehk, body)
	}
	if err != nil {
		if errors.Is(err, kpl.ErrTooLarge) {
			return errTooLarge{size: len(body), key: len(r.key), limit: b.maxSize}
		}
		return err
	}
	if len(l.open) == 0 {
		l.since, l.touched = now, now
	}
	l.open = append(l.open, r)
	l.openB += len(body)
	b.m.buffered.Add(float64(len(body)))
	return nil
}

type errTooLarge struct{ size, key, limit int }

func (e errTooLarge) Error() string {
	return "body of " + strconv.Itoa(e.size) + " bytes with a " + strconv.Itoa(e.key) + "-byte key does not fit in a Kinesis record of " + strconv.Itoa(e.limit) + " bytes"
}

// seal closes the lane's open aggregate into an entry at the end of its queue (b.mu held).
func (b *Bridge) seal(l *lane) {
	if len(l.open) == 0 {
		return
	}
	e := &entry{lane: l, msgs: l.open, bytes: l.openB, touched: l.touched}
	e.rec = l.agg.Flush(nil)
	l.open, l.openB = nil, 0
	l.queue = append(l.queue, e)
}

// free reports whether the lane could send an entry now.
func (b *Bridge) free(l *lane, now time.Time) bool {
	if b.o.Ordering == Strict && l.flying > 0 {
		return false
	}
	return !now.Before(l.retryAt) && !l.retired && !l.paused
}

// sealDue seals every open aggregate that is due (b.mu held): older than MaxBufferedTime, or any
// age when stopping or when the held messages approach max-in-flight (nsqd will soon stop sending,
// and waiting for the age would only idle the connection).
// A lane that cannot send keeps aggregating: bigger records when Kinesis is slow or throttling.
func (b *Bridge) sealDue(now time.Time) bool {
	starving := b.stop || b.held.Load() >= b.threshold
	sealed := false
	for _, l := range b.lanes {
		if len(l.open) == 0 || len(l.queue) > 0 || !b.free(l, now) {
			continue
		}
		if starving || now.Sub(l.since) >= b.o.MaxBufferedTime {
			b.seal(l)
			sealed = true
		}
	}
	return sealed
}

// flushLoop seals aggregates by age. Its tick is a tenth of MaxBufferedTime, so an aggregate is
// sealed at most 10% after its deadline.
func (b *Bridge) flushLoop(ctx context.Context) {
	every(ctx, max(b.o.MaxBufferedTime/10, time.Millisecond), func(now time.Time) {
		b.mu.Lock()
		sealed := b.sealDue(now)
		b.mu.Unlock()
		if sealed {
			b.signal(b.kick)
		}
	})
}

// touchLoop TOUCHes messages held longer than half the message timeout, so nsqd does not time
// them out and redeliver them while Kinesis is slow.
func (b *Bridge) touchLoop(ctx context.Context) {
	half := b.o.MsgTimeout / 2
	every(ctx, max(b.o.MsgTimeout/8, 10*time.Millisecond), func(now time.Time) {
		var due []*nsq.Message
		b.mu.Lock()
		for _, l := range b.lanes {
			for _, e := range l.queue {
				if now.Sub(e.touched) >= half {
					e.touched = now
					for _, r := range e.msgs {
						due = append(due, r.s.newest())
					}
				}
			}
			if len(l.open) > 0 && now.Sub(l.touched) >= half {
				l.touched = now
				for _, r := range l.open {
					due = append(due, r.s.newest())
				}
			}
		}
		b.mu.Unlock()
		for _, m := range due {
			m.Touch()
		}
		b.m.touches.Add(float64(len(due)))
	})
}
