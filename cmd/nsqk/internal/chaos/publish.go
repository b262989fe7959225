package chaos

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nsqio/go-nsq"

	"github.com/nsqk/nsqk/shared/location"
)

// Publisher publishes location messages to the rig's topic and records each in the ledger once
// nsqd acknowledged it.
type Publisher struct {
	r      *Rig
	gen    *location.Generator
	prefix byte // replaces the user ids' leading "u" (0 = keep)
	p      *nsq.Producer
	gate   sync.Mutex // held while a batch is published; Pause takes it
	sent   atomic.Int64
}

// NewPublisher returns a publisher over users users (reproducible per seed).
func (r *Rig) NewPublisher(users int, seed uint64) (*Publisher, error) {
	cfg := nsq.NewConfig()
	p, err := nsq.NewProducer(r.NSQ.TCPAddr(), cfg)
	if err != nil {
		return nil, err
	}
	p.SetLogger(nil, nsq.LogLevelError)
	r.t.Cleanup(p.Stop)
	return &Publisher{r: r, gen: location.NewGenerator(users, seed), p: p}, nil
}

// WithPrefix makes the user ids start with c instead of "u" (a separate population).
func (p *Publisher) WithPrefix(c byte) *Publisher {
	p.prefix = c
	return p
}

// Next returns the next message body (not published).
func (p *Publisher) Next() []byte {
	b, _, _ := p.gen.Next(nil)
	if p.prefix != 0 {
		// {"user_id":"u000000001",...: the id's first character is at offset 12.
		b[12] = p.prefix
	}
	return b
}

// Sent is the number of messages published.
func (p *Publisher) Sent() int { return int(p.sent.Load()) }

// Publish publishes n messages now (MPUB batches of up to 100) and records them as good.
func (p *Publisher) Publish(n int) error {
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = p.Next()
	}
	return p.PublishBodies(bodies, true)
}

// PublishBodies publishes bodies; with good they are recorded as messages for the stream.
func (p *Publisher) PublishBodies(bodies [][]byte, good bool) error {
	p.gate.Lock()
	defer p.gate.Unlock()
	for i := 0; i < len(bodies); i += 100 {
		batch := bodies[i:min(i+100, len(bodies))]
		if err := p.mpub(batch); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		if good {
			p.r.Ledger.Good(batch...)
		}
		p.sent.Add(int64(len(batch)))
	}
	return nil
}

// mpub publishes a batch, retrying while go-nsq reports ErrNotConnected (it has not sent the
// batch: its connection to a restarted nsqd is still being torn down) for up to 10 s.
func (p *Publisher) mpub(batch [][]byte) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := p.p.MultiPublish(p.r.Topic, batch)
		if !errors.Is(err, nsq.ErrNotConnected) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond) // retry backoff
	}
}

// Pause waits for a batch being published and blocks further publishing until Resume.
func (p *Publisher) Pause() { p.gate.Lock() }

// Resume undoes Pause.
func (p *Publisher) Resume() { p.gate.Unlock() }

// Run publishes rate messages per second (in 20 ms steps) for d, or until ctx ends.
func (p *Publisher) Run(ctx context.Context, rate int, d time.Duration) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	end := start.Add(d)
	sent := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			if now.After(end) {
				now = end
			}
			due := int(now.Sub(start).Seconds()*float64(rate)) - sent
			if due > 0 {
				if err := p.Publish(due); err != nil {
					return err
				}
				sent += due
			}
			if !now.Before(end) {
				return nil
			}
		}
	}
}

// Go runs Run in the background; the channel receives its result.
func (p *Publisher) Go(ctx context.Context, rate int, d time.Duration) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- p.Run(ctx, rate, d) }()
	return ch
}
