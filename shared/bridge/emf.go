package bridge

import (
	"context"
	"time"

	"github.com/nsqk/nsqk/shared/emf"
)

// cloudWatch holds the bridge's metrics in CloudWatch Embedded Metric Format (namespace
// NSQK/Bridge, dimension Stream). They reach CloudWatch through the container's log group, so the
// task role needs no cloudwatch:PutMetricData and nothing on the hot path calls an API.
type cloudWatch struct {
	reg                                             *emf.Registry
	in, acked, deadLettered, failedEntries, retries *emf.Counter
	ackLatency                                      *emf.Histogram
	backlog, inFlight                               *emf.Gauge
}

// EnableEMF makes the bridge record its CloudWatch metrics into r (call before Run); Run flushes r
// every interval.
func (b *Bridge) EnableEMF(r *emf.Registry, interval time.Duration) {
	b.cw = &cloudWatch{
		reg:           r,
		in:            r.Counter("MessagesIn", emf.Count),
		acked:         r.Counter("MessagesAcked", emf.Count),
		deadLettered:  r.Counter("DeadLettered", emf.Count),
		failedEntries: r.Counter("PutRecordsFailedEntries", emf.Count),
		retries:       r.Counter("Retries", emf.Count),
		ackLatency:    r.Histogram("AckLatency", emf.Milliseconds),
		backlog:       r.Gauge("NSQBacklog", emf.Count),
		inFlight:      r.Gauge("InFlightMessages", emf.Count),
	}
	b.emfInterval = interval
	b.dl.onDeadLettered = b.cw.deadLettered.Inc
}

func (b *Bridge) emfLoop(ctx context.Context) {
	if b.cw == nil {
		return
	}
	flush := func(time.Time) {
		b.cw.inFlight.Set(float64(b.held.Load()))
		if err := b.cw.reg.Flush(); err != nil {
			b.log.Warn("EMF flush failed", "err", err)
		}
	}
	every(ctx, b.emfInterval, flush)
	flush(time.Now()) // what the last interval recorded, at shutdown
}
