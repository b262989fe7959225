package bridge

import (
	"context"
	"strings"
	"time"

	"github.com/nsqk/nsqk/shared/emf"
)

// cloudWatch holds the bridge's metrics in CloudWatch Embedded Metric Format (namespace
// NSQK/Bridge, dimension Stream, and Route for one of several routes). With an nsqd partition
// every metric is published twice: with dimension Partition too (one group's view, for its own
// alarms) and without it (CloudWatch aggregates the groups of a route). They reach CloudWatch
// through the container's log group, so the task role needs no cloudwatch:PutMetricData and
// nothing on the hot path calls an API.
type cloudWatch struct {
	reg                                             *emf.Registry
	in, acked, deadLettered, failedEntries, retries *emf.Counter
	ackLatency                                      *emf.Histogram
	backlog, inFlight                               *emf.Gauge
	evicted                                         map[string]*emf.Counter // by memory

	backlogFailures                                     *emf.Counter
	nsqdConns, rdy, otherClients, sinceLast, ownedNodes *emf.Gauge
}

// newCloudWatch returns the EMF side of the metrics, or nil when o.EMFOutput is nil.
func newCloudWatch(o *Options) *cloudWatch {
	if o.EMFOutput == nil {
		return nil
	}
	dims := []emf.Dimension{{Name: "Stream", Value: streamName(o.Stream)}}
	if o.Route != "" {
		dims = append(dims, emf.Dimension{Name: "Route", Value: o.Route})
	}
	var rollups []int
	if o.NSQDPartition.Count > 0 {
		rollups = []int{len(dims)}
		dims = append(dims, emf.Dimension{Name: "Partition", Value: o.NSQDPartition.String()})
	}
	r := emf.New(emf.Config{Namespace: "NSQK/Bridge", Dimensions: dims, Rollups: rollups, Output: o.EMFOutput})
	return &cloudWatch{
		reg:           r,
		in:            r.Counter("MessagesIn", emf.Count),
		acked:         r.Counter("MessagesAcked", emf.Count),
		deadLettered:  r.Counter("DeadLettered", emf.Count),
		failedEntries: r.Counter("PutRecordsFailedEntries", emf.Count),
		retries:       r.Counter("Retries", emf.Count),
		ackLatency:    r.Histogram("AckLatency", emf.Milliseconds),
		backlog:       r.Gauge("NSQBacklog", emf.Count),
		inFlight:      r.Gauge("InFlightMessages", emf.Count),
		evicted: map[string]*emf.Counter{
			memLateWindow: r.Counter("LateWindowEvicted", emf.Count),
			memWritten:    r.Counter("WrittenEvicted", emf.Count),
		},
		backlogFailures: r.Counter("BacklogPollFailures", emf.Count),
		nsqdConns:       r.Gauge("NSQDConnections", emf.Count),
		rdy:             r.Gauge("NSQRdy", emf.Count),
		otherClients:    r.Gauge("ChannelOtherClients", emf.Count),
		sinceLast:       r.Gauge("SecondsSinceLastMessage", emf.Seconds),
		ownedNodes:      r.Gauge("OwnedNodes", emf.Count),
	}
}

// streamName returns the name part of a stream ARN (arn:aws:kinesis:region:acct:stream/NAME).
func streamName(s string) string {
	if i := strings.LastIndex(s, ":stream/"); i >= 0 {
		return s[i+len(":stream/"):]
	}
	return s
}

// emfLoop writes the EMF metrics every EMFInterval, and once more at shutdown.
func (b *Bridge) emfLoop(ctx context.Context) {
	cw := b.m.cw
	if cw == nil {
		return
	}
	flush := func(time.Time) {
		cw.inFlight.Set(float64(b.held.Load()))
		if err := cw.reg.Flush(); err != nil {
			b.log.Warn("EMF flush failed", "err", err)
		}
	}
	every(ctx, b.o.EMFInterval, flush)
	flush(time.Now()) // what the last interval recorded, at shutdown
}
