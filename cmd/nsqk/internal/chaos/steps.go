package chaos

import (
	"context"
	"syscall"
	"time"

	"github.com/nsqk/nsqk/cmd/nsqk/internal/promq"
	"github.com/nsqk/nsqk/shared/bridge"
	"github.com/nsqk/nsqk/shared/local/kinesisfault"
)

// The steps most cases share: start a bridge and wait until it consumes; at the end, wait until
// NSQ has nothing pending, stop the bridge as SIGTERM would (checking that it stops cleanly),
// read the stream and the dead letters back and account them.

// StartReady starts an in-process bridge with o and waits until it is consuming.
func (r *Rig) StartReady(ctx context.Context, o bridge.Options) (*InProc, error) {
	b, err := r.StartBridge(o)
	if err != nil {
		return nil, err
	}
	if err := WaitFor(ctx, 30*time.Second, "bridge ready", b.B.Ready); err != nil {
		return nil, err
	}
	return b, nil
}

// StopInProc stops an in-process bridge as SIGTERM would, checks that Run returned nil, and
// returns its metrics from just before the stop.
func (r *Rig) StopInProc(b *InProc) promq.Families {
	mf := b.Metrics()
	err := b.Stop(time.Minute)
	r.t.Check("graceful stop returns nil", err == nil, "Run returned %v", err)
	return mf
}

// SIGTERM sends SIGTERM to a child bridge, waits for it to exit and checks that it exits 0. It
// returns the child's metrics scraped just before (nil if the scrape failed).
func (r *Rig) SIGTERM(ctx context.Context, c *Child) (promq.Families, error) {
	mf, _ := c.Scrape(ctx)
	c.Signal(syscall.SIGTERM)
	code, err := c.Wait(time.Minute)
	if err != nil {
		return nil, err
	}
	r.t.Event("%s exited with %d", c.Name, code)
	r.t.Check(c.Name+" exits 0 on SIGTERM", code == 0, "exit code %d; log tail: %s", code, tailIf(code != 0, c))
	return mf, nil
}

// Ending is what a case judges once the bridge stopped.
type Ending struct {
	Obs Observed
	A   Accounting
	// MF holds the bridge's metrics from just before the stop; nil for a child bridge that could
	// not be scraped.
	MF promq.Families
}

// Settle reads the stream and the dead letters back, accounts them, and notes the bridge's
// counters (mf may be nil).
func (r *Rig) Settle(ctx context.Context, mf promq.Families) (Ending, error) {
	obs, n, err := r.Observe(ctx)
	if err != nil {
		return Ending{}, err
	}
	a := r.Account(obs)
	r.t.Metric("kinesis_records", n)
	if mf != nil {
		noteBridge(r.t, mf)
	}
	return Ending{Obs: obs, A: a, MF: mf}, nil
}

// EndInProc waits up to drain until NSQ has nothing pending, stops the in-process bridge and
// settles.
func (r *Rig) EndInProc(ctx context.Context, b *InProc, drain time.Duration) (Ending, error) {
	if err := r.WaitDrained(ctx, drain); err != nil {
		return Ending{}, err
	}
	return r.Settle(ctx, r.StopInProc(b))
}

// EndChild waits up to drain until NSQ has nothing pending, sends SIGTERM to the child bridge
// and settles.
func (r *Rig) EndChild(ctx context.Context, c *Child, drain time.Duration) (Ending, error) {
	if err := r.WaitDrained(ctx, drain); err != nil {
		return Ending{}, err
	}
	mf, err := r.SIGTERM(ctx, c)
	if err != nil {
		return Ending{}, err
	}
	return r.Settle(ctx, mf)
}

// frontWindow is the usual fault window: 200 users publishing 300 msg/s (quick: 200) to 2
// shards, 2 s (quick: 1 s) before the fault, the fault f on the front for full (quick: quick),
// and 3 s (quick: 1 s) after it.
func frontWindow(t *T, f kinesisfault.Faults, full, quick time.Duration) window {
	return window{shards: 2, users: 200, rate: t.N(300, 200),
		before: t.Dur(2*time.Second, time.Second), fault: t.Dur(full, quick), after: t.Dur(3*time.Second, time.Second),
		apply: setFaults(f), clear: noFaults}
}

// windowCase completes c into a fault-window case: it runs the window w builds, lets felt check
// that the fault was felt, and judges the accounting against e.
func windowCase(c Case, w func(t *T) window, felt func(t *T, w *windowRun), e Expect) Case {
	c.Run = func(ctx context.Context, t *T) error {
		run, err := runWindow(ctx, t, w(t))
		if err != nil {
			return err
		}
		felt(t, run)
		t.Judge(run.a, e)
		return nil
	}
	return c
}

// injected checks that the front injected its fault: count reads how often from its stats.
func injected(what string, count func(kinesisfault.Stats) int64) func(t *T, w *windowRun) {
	return func(t *T, w *windowRun) {
		n := count(w.r.Front.Stats())
		t.Check("fault injected", n > 0, "%d %s", n, what)
	}
}

// PublishUntil starts users publishing rate msg/s for total and returns once at has passed
// (where a case brings its fault on); done reports the end of publishing.
func (r *Rig) PublishUntil(ctx context.Context, users int, seed uint64, rate int, total, at time.Duration) (pub *Publisher, done <-chan error, err error) {
	pub, err = r.NewPublisher(users, seed)
	if err != nil {
		return nil, nil, err
	}
	r.t.Event("publishing %d msg/s from %d users for %s", rate, users, total)
	done = pub.Go(ctx, rate, total)
	if err := hold(ctx, at); err != nil {
		return nil, nil, err
	}
	return pub, done, nil
}
