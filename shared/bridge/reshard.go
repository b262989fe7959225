package bridge

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/nsqk/nsqk/shared/shardmap"
)

// refreshLoop reloads the shard map every ShardRefresh, and at once (at most every 250 ms) when
// a record landed on an unexpected shard. A refresh that fails while lanes wait for it (after a
// misroute) is retried with exponential backoff, from 250 ms up to ShardRefresh.
func (b *Bridge) refreshLoop(ctx context.Context) {
	t := time.NewTicker(b.o.ShardRefresh)
	defer t.Stop()
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval = 250*time.Millisecond, max(b.o.ShardRefresh, 250*time.Millisecond)
	var last time.Time
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-retry:
		case <-b.refresh:
			if wait := 250*time.Millisecond - time.Since(last); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}
		retry = nil
		last = time.Now()
		m, err := shardmap.Load(ctx, b.kc, b.o.Stream)
		if err != nil {
			if isFatal(err) {
				b.setFatal(err)
				return
			}
			b.mu.Lock()
			waiting := b.stale
			b.mu.Unlock()
			if waiting {
				d := bo.NextBackOff()
				retry = time.After(d)
				b.log.Warn("shard map refresh failed while lanes wait for it; retrying", "err", err, "retry_in", d)
			} else {
				b.log.Warn("shard map refresh failed; keeping the current map", "err", err)
			}
			continue
		}
		bo.Reset()
		b.apply(m)
	}
}

// install makes m the routing map (b.mu held, or before anything runs): lanes of shards that keep
// their range are kept, others are created, holding their first write until settle.
func (b *Bridge) install(m *shardmap.Map, settle time.Time) {
	old := map[string][]*lane{}
	for i, s := range b.smapShards() {
		old[s.ID] = b.table[i]
	}
	b.smap = m
	b.table = make([][]*lane, m.Len())
	b.lanes = b.lanes[:0]
	for i, s := range m.Shards() {
		lanes := old[s.ID]
		if len(lanes) == 0 || lanes[0].shard.Start != s.Start || lanes[0].shard.End != s.End || lanes[0].retired {
			lanes = make([]*lane, b.o.KeyBuckets)
			for k := range lanes {
				lanes[k] = newLane(s, k, &b.o, b.maxSize)
				lanes[k].retryAt = settle
			}
		}
		for _, l := range lanes {
			l.paused = false
		}
		b.table[i] = lanes
		b.lanes = append(b.lanes, lanes...)
	}
	b.rr = 0
	b.stale = false
	b.m.shards.Set(float64(m.Len()))
}

func (b *Bridge) smapShards() []shardmap.Shard {
	if b.smap == nil {
		return nil
	}
	return b.smap.Shards()
}

// apply starts a shard map change. Lanes whose shard is gone (split, merged) are retired: nothing
// more is sent from them, and new messages keep being routed to them with the old map, so that
// once their in-flight entries have finished their messages can be re-routed, in order, with the
// new map before anything newer. Per-key order is kept across the change.
func (b *Bridge) apply(m *shardmap.Map) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.smap.Equal(m) || (b.pending != nil && b.pending.Equal(m)) {
		if b.pending == nil {
			for _, l := range b.lanes { // a misroute without a reshard: nothing to wait for
				l.paused = false
			}
			b.stale = false
			b.signal(b.kick)
		}
		return
	}
	keep := map[string]shardmap.Shard{}
	for _, s := range m.Shards() {
		keep[s.ID] = s
	}
	for _, l := range b.lanes {
		s, ok := keep[l.shard.ID]
		l.retired = !ok || s.Start != l.shard.Start || s.End != l.shard.End
	}
	b.pending = m
	b.log.Info("shard map changed; draining retired lanes", "from", b.smap.String(), "to", m.String())
	b.maybeFinishReshard(time.Now())
}

// maybeFinishReshard installs the pending map once no retired lane has an entry in flight, and
// re-routes the retired lanes' messages (b.mu held).
//
// An entry that may already be in the stream (its request failed as a whole) is kept whole: it
// goes, as the same record, to the new lane of the shard its explicit hash key (the retired
// shard's start) now belongs to, which is where Kinesis will put it, and its keys stick to that
// shard like the keys of a misrouted record. A duplicate is then the whole record next to the
// original. Every other message is re-aggregated in its new lane.
func (b *Bridge) maybeFinishReshard(now time.Time) {
	var moved []msgRef
	var whole []*entry
	for _, l := range b.lanes {
		if l.retired && l.flying > 0 {
			return
		}
	}
	for _, l := range b.lanes {
		if l.retired {
			for _, e := range l.queue {
				if e.maybeWritten {
					whole = append(whole, e)
					continue
				}
				moved = append(moved, e.msgs...)
				b.m.buffered.Sub(float64(e.bytes))
			}
			moved = append(moved, l.open...)
			b.m.buffered.Sub(float64(l.openB))
			l.queue, l.open, l.openB = nil, nil, 0
			l.agg.Reset()
		}
	}
	// A key whose last records went to the parent (or, for at most one record per lane, to a
	// sibling child) must not reach its new shard so soon after that a consumer reading the
	// children in parallel could process the new record first: hold the new lanes a moment.
	b.install(b.pending, now.Add(b.o.ReshardSettle))
	b.pending = nil
	b.m.reshards.Inc()
	for _, e := range whole {
		nl := b.table[b.smap.Lookup(e.lane.shard.Start)][e.lane.bucket]
		e.lane = nl
		nl.queue = append(nl.queue, e)
		for _, r := range e.msgs {
			b.sticky[r.hash.Low64()] = stickyKey{shard: nl.shard.ID, last: now}
		}
	}
	for _, r := range moved {
		if err := b.addToLane(b.route(r.hash, now), r, now); err != nil {
			// Cannot happen: the record fitted before and limits did not change. Never drop it.
			b.log.Error("re-routing after reshard failed; requeueing", "err", err)
			for _, m := range r.s.deliveries(nil) {
				b.release(m, false, "reshard", 0)
			}
		}
	}
	b.log.Info("shard map installed", "shards", b.smap.String(), "rerouted_messages", len(moved), "entries_kept_whole", len(whole))
	b.signal(b.kick)
}
