package chaos

import (
	"context"
	"time"
)

// RSS bounds of the memory case: the bridge holds at most --max-in-flight messages (2500 of
// ~250 bytes), so an outage should cost it a few MiB, and nothing should keep growing.
const (
	rssGrowthLimitKiB = 64 << 10 // peak during the outage minus RSS when it began
	rssTrendLimitKiB  = 16 << 10 // max of the outage's second half minus max of its first half
)

func memoryCases() []Case {
	return []Case{
		{
			Name: "memory-outage", Group: "memory", Quick: true,
			Summary: "bridge program (child) with producers publishing 500 msg/s (quick: 300) through a 60 s Kinesis outage (quick: 8 s); VmRSS sampled every second; " +
				"nsqd --mem-queue-size=0 so that the backlog keeps its order (see nsq-backlog-spill)",
			Rule: "RSS bounded: peak during the outage <= RSS at its start + 64 MiB and the outage's second half <= its first half + 16 MiB; " +
				"it catches up: every published message delivered to the stream (at-least-once: duplicates only as whole re-sent records), lost=0, reordered=0; SIGTERM exits 0",
			Run: memoryOutage,
		},
	}
}

func memoryOutage(ctx context.Context, t *T) error {
	r, err := t.NewRig(ctx, RigOptions{Shards: 2, DiskOnly: true})
	if err != nil {
		return err
	}
	c, err := r.StartChild(ctx, "bridge")
	if err != nil {
		return err
	}
	rss := sample(time.Second, c.RSS)
	t.Cleanup(func() { rss.finish() })
	before, outage, after := t.Dur(5*time.Second, 2*time.Second), t.Dur(60*time.Second, 8*time.Second), t.Dur(5*time.Second, 2*time.Second)
	pub, done, err := r.PublishUntil(ctx, 1000, 47, t.N(500, 300), before+outage+after, before)
	if err != nil {
		return err
	}
	r.Front.Down()
	downAt := rss.len()
	t.Event("Kinesis down (%d published so far)", pub.Sent())
	if err := hold(ctx, outage); err != nil {
		return err
	}
	if err := r.Front.Up(); err != nil {
		return err
	}
	upAt := rss.len()
	st, _ := r.NSQ.Channel(r.Topic, r.Channel)
	t.Event("Kinesis up again (%d published, %d queued in NSQ, %d in flight to the bridge)", pub.Sent(),
		r.NSQ.Pending(r.Topic, r.Channel)-int64(st.InFlightCount), st.InFlightCount)
	if err := <-done; err != nil {
		return err
	}
	upTime := time.Now()
	if err := r.WaitDrained(ctx, 5*time.Minute); err != nil {
		return err
	}
	caughtUp := time.Since(upTime)
	t.Event("caught up %.1fs after the publishers stopped", caughtUp.Seconds())
	t.Metric("catch_up_seconds", roundS(caughtUp))
	mf, err := r.SIGTERM(ctx, c)
	series := rss.finish()
	if err != nil {
		return err
	}

	rs := &RSSSeries{IntervalS: 1, KiB: series, Phases: map[string][2]int{"before": {0, downAt}, "outage": {downAt, upAt}, "after": {upAt, len(series)}}}
	rs.MinKiB, rs.MaxKiB = minMax(series)
	t.res.RSS = rs
	if downAt >= len(series) || upAt > len(series) || upAt-downAt < 4 {
		t.Check("RSS sampled", false, "%d samples, outage %d..%d", len(series), downAt, upAt)
	} else {
		start := series[max(downAt-1, 0)]
		_, peak := minMax(series[downAt:upAt])
		half := downAt + (upAt-downAt)/2
		_, firstHalf := minMax(series[downAt:half])
		_, secondHalf := minMax(series[half:upAt])
		t.Check("RSS bounded during the outage", peak-start <= rssGrowthLimitKiB && secondHalf-firstHalf <= rssTrendLimitKiB,
			"RSS at the outage start %d MiB, peak %d MiB (+%d MiB, limit +%d); first half max %d MiB, second half max %d MiB (limit +%d); overall %d..%d MiB",
			start>>10, peak>>10, (peak-start)>>10, rssGrowthLimitKiB>>10, firstHalf>>10, secondHalf>>10, rssTrendLimitKiB>>10, rs.MinKiB>>10, rs.MaxKiB>>10)
	}
	end, err := r.Settle(ctx, mf)
	if err != nil {
		return err
	}
	a := end.A
	if mf != nil {
		t.Note("bridge held %.0f messages at the end (max-in-flight 2500)", mf.Value("nsqk_bridge_in_flight_messages"))
	}
	noteLate(t, end.Obs.DeadLetters)
	t.Judge(a, Expect{MaxDup: -1, DupWhy: "requests in flight when the endpoint went down may have been written", SameRecordDupsOnly: true})
	t.Check("every published message delivered", a.Delivered == a.Good, "%d of %d in the stream", a.Delivered, a.Good)
	t.checkNoRace(c)
	return nil
}

func minMax(v []int64) (lo, hi int64) {
	for i, x := range v {
		if i == 0 || x < lo {
			lo = x
		}
		if i == 0 || x > hi {
			hi = x
		}
	}
	return lo, hi
}
