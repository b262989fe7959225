package bridge

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics is the bridge's one metrics recorder: its Prometheus series (prefix nsqk_bridge_, listed
// in the README) and, when Options.EMFOutput is set, the CloudWatch EMF subset. Code that records
// an event that both report calls one of the methods below; Prometheus-only series are used
// directly.
type metrics struct {
	cw *cloudWatch // nil without EMF

	messagesIn      prometheus.Counter
	messagesAcked   prometheus.Counter
	messagesRequeue *prometheus.CounterVec // by cause
	deadLettered    *prometheus.CounterVec // by reason
	deadLetterFail  prometheus.Counter
	bytesIn         prometheus.Counter
	bytesOut        prometheus.Counter
	aggregates      prometheus.Counter
	shardMessages   *prometheus.CounterVec // by shard id
	userRecords     prometheus.Histogram
	putCalls        *prometheus.CounterVec // by outcome: ok, partial, error
	putEntries      prometheus.Counter
	putFailed       *prometheus.CounterVec // by error code
	retries         prometheus.Counter
	touches         prometheus.Counter
	misrouted       prometheus.Counter
	reshards        prometheus.Counter
	late            prometheus.Counter
	outOfOrder      prometheus.Counter
	redelivered     *prometheus.CounterVec
	memoryEvicted   *prometheus.CounterVec // by memory: late_window, written
	memoryEntries   *prometheus.GaugeVec   // by memory
	housekeeping    prometheus.Histogram
	inFlight        prometheus.Gauge // messages held: received, not yet FIN'd or requeued
	buffered        prometheus.Gauge // bytes of user data held in aggregates not yet acknowledged
	shards          prometheus.Gauge
	backlog         prometheus.Gauge
	backlogFailures prometheus.Counter
	nsqdConns       prometheus.Gauge
	rdy             prometheus.Gauge
	otherClients    prometheus.Gauge
	sinceLast       prometheus.Gauge
	ownedNodes      prometheus.Gauge
	ackLatency      prometheus.Histogram
	putLatency      prometheus.Histogram
}

// Values of the memory label.
const (
	memLateWindow = "late_window"
	memWritten    = "written"
)

// ackBuckets (seconds) are fine around the typical 20-200 ms flush window and reach into minutes
// for outages; CloudWatch EMF percentiles are computed from the same buckets.
var ackBuckets = []float64{
	.002, .005, .01, .015, .02, .025, .03, .04, .05, .06, .075, .1, .125, .15, .175, .2, .25, .3, .4,
	.5, .75, 1, 1.5, 2, 3, 5, 10, 20, 30, 60, 120, 300,
}

func newMetrics(reg prometheus.Registerer, cw *cloudWatch) *metrics {
	const ns, sub = "nsqk", "bridge"
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
	}
	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help}, labels)
	}
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
	}
	m := &metrics{
		cw:              cw,
		messagesIn:      c("messages_in_total", "NSQ messages received."),
		messagesAcked:   c("messages_acked_total", "NSQ messages FINished after Kinesis accepted the record carrying them."),
		messagesRequeue: cv("messages_requeued_total", "NSQ messages requeued (REQ) instead of FINished, by cause.", "cause"),
		deadLettered:    cv("dead_lettered_total", "Messages published to the dead-letter topic and FINished, by reason.", "reason"),
		deadLetterFail:  c("dead_letter_failures_total", "Dead-letter publishes that failed (the message is requeued and tried again)."),
		bytesIn:         c("bytes_in_total", "Message body bytes received from NSQ."),
		bytesOut:        c("bytes_out_total", "Record bytes (data + partition key) accepted by Kinesis."),
		aggregates:      c("aggregates_total", "Kinesis records (KPL aggregates) accepted by Kinesis."),
		shardMessages:   cv("shard_messages_total", "Messages accepted by Kinesis, by the shard that stored them.", "shard"),
		userRecords: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "user_records_per_aggregate",
			Help: "User records per accepted Kinesis record.", Buckets: prometheus.ExponentialBuckets(1, 2, 14)}),
		putCalls:    cv("putrecords_calls_total", "PutRecords calls by outcome (ok, partial, error).", "outcome"),
		putEntries:  c("putrecords_entries_total", "PutRecords entries sent (including retries)."),
		putFailed:   cv("putrecords_failed_entries_total", "PutRecords entries that failed, by error code.", "code"),
		retries:     c("retries_total", "Entries sent again after a failure."),
		touches:     c("touches_total", "NSQ TOUCH commands sent for messages waiting longer than half the message timeout."),
		misrouted:   c("misrouted_entries_total", "Entries Kinesis stored on another shard than the shard map predicted (the map is then refreshed)."),
		reshards:    c("shard_map_changes_total", "Shard map changes applied."),
		redelivered: cv("redelivered_total", "Messages nsqd delivered again that the bridge still held (state=held: the new delivery replaced the old) or had written within --written-window (state=written: FINished at once); neither is written twice.", "state"),
		late:        c("late_redeliveries_total", "Redelivered messages older than one already accepted for their key; dead-lettered or written per --late-redelivery."),
		outOfOrder:  c("out_of_order_deliveries_total", "First deliveries older than a message already accepted for their key (nsqd interleaves its memory and disk queues once a channel is deeper than --mem-queue-size); written."),
		memoryEvicted: cv("memory_evicted_total", "Entries forgotten before their window because the memory's budget was reached, by memory: "+
			"late_window (keys' newest timestamps, --late-window-memory-mib: a late redelivery of such a key is no longer recognised) or "+
			"written (messages written, --written-memory-mib: a redelivery of such a message whose FIN was lost is written again).", "memory"),
		memoryEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "memory_entries",
			Help: "Entries remembered, by memory: late_window (keys) or written (messages)."}, []string{"memory"}),
		housekeeping: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "housekeeping_lock_seconds",
			Help:    "How long one housekeeping pass (forgetting expired keys, messages and sticky keys) held the bridge's lock; intake, completion and sending wait meanwhile.",
			Buckets: []float64{.0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .1, .25, 1}}),
		inFlight:        g("in_flight_messages", "NSQ messages held by the bridge (received, not yet FINished or requeued)."),
		buffered:        g("buffered_bytes", "User data bytes in aggregates not yet accepted by Kinesis."),
		shards:          g("open_shards", "Open shards in the current shard map."),
		backlog:         g("nsq_backlog_messages", "Depth of the NSQ channel (queued, not yet delivered) as reported by nsqd."),
		backlogFailures: c("nsq_backlog_poll_failures_total", "Polls of nsqd's /stats (backlog, RDY, channel clients) that failed; those gauges keep their last value meanwhile."),
		nsqdConns:       g("nsqd_connections", "Open connections to nsqd instances; 0 means nothing can be consumed."),
		rdy:             g("nsq_rdy", "RDY nsqd counts for this bridge's connections (messages nsqd may send before more FINs), from its /stats."),
		otherClients:    g("nsq_channel_other_clients", "Other clients consuming the bridge's NSQ channel, from nsqd's /stats: nsqd splits the messages between them, so the stream is incomplete and a key's order is lost."),
		sinceLast:       g("seconds_since_last_message", "Seconds since the bridge last received an NSQ message (since start before the first)."),
		ownedNodes:      g("owned_nodes", "nsqd nodes carrying the topic that this bridge reads, from the last nsqlookupd lookup (with --nsqd-partition, the nodes of its partition; with nsqd HTTP addresses, their count)."),
		ackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "ack_latency_seconds",
			Help: "NSQ publish timestamp to Kinesis acceptance, per message.", Buckets: ackBuckets}),
		putLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "putrecords_latency_seconds",
			Help: "PutRecords call latency (including SDK retries).", Buckets: ackBuckets}),
	}
	if reg != nil {
		reg.MustRegister(m.messagesIn, m.messagesAcked, m.messagesRequeue, m.deadLettered, m.deadLetterFail,
			m.bytesIn, m.bytesOut, m.aggregates, m.shardMessages, m.userRecords, m.putCalls, m.putEntries, m.putFailed,
			m.retries, m.touches, m.misrouted, m.reshards, m.late, m.outOfOrder, m.redelivered, m.memoryEvicted, m.memoryEntries, m.housekeeping, m.inFlight, m.buffered, m.shards, m.backlog,
			m.backlogFailures, m.nsqdConns, m.rdy, m.otherClients, m.sinceLast, m.ownedNodes,
			m.ackLatency, m.putLatency)
	}
	return m
}

// owned records how many nsqd nodes carrying the topic the bridge reads.
func (m *metrics) owned(n int) {
	m.ownedNodes.Set(float64(n))
	if m.cw != nil {
		m.cw.ownedNodes.Set(float64(n))
	}
}

// received records one message taken from NSQ.
func (m *metrics) received(bytes int) {
	m.messagesIn.Inc()
	m.bytesIn.Add(float64(bytes))
	if m.cw != nil {
		m.cw.in.Inc()
	}
}

// ackLatencyOf records the time from NSQ publish to Kinesis acceptance of one message.
func (m *metrics) ackLatencyOf(d time.Duration) {
	m.ackLatency.Observe(d.Seconds())
	if m.cw != nil {
		m.cw.ackLatency.ObserveDuration(d)
	}
}

// acked records messages FINished after Kinesis accepted them.
func (m *metrics) acked(n int) {
	m.messagesAcked.Add(float64(n))
	if m.cw != nil {
		m.cw.acked.Add(int64(n))
	}
}

// deadLetter records a message published to the dead-letter topic.
func (m *metrics) deadLetter(reason Reason) {
	m.deadLettered.WithLabelValues(string(reason)).Inc()
	if m.cw != nil {
		m.cw.deadLettered.Inc()
	}
}

// retried records an entry sent again after a failure.
func (m *metrics) retried() {
	m.retries.Inc()
	if m.cw != nil {
		m.cw.retries.Inc()
	}
}

// failedEntries records the PutRecords entries of one request that failed, by error code.
func (m *metrics) failedEntries(codes map[string]int) {
	n := 0
	for code, c := range codes {
		m.putFailed.WithLabelValues(code).Add(float64(c))
		n += c
	}
	if m.cw != nil {
		m.cw.failedEntries.Add(int64(n))
	}
}

// nsqBacklog records the depth of the NSQ channel.
func (m *metrics) nsqBacklog(depth int64) {
	m.backlog.Set(float64(depth))
	if m.cw != nil {
		m.cw.backlog.Set(float64(depth))
	}
}

// evictedEarly records entries a memory forgot before their window because of its budget.
func (m *metrics) evictedEarly(memory string, n int) {
	m.memoryEvicted.WithLabelValues(memory).Add(float64(n))
	if m.cw != nil {
		m.cw.evicted[memory].Add(int64(n))
	}
}

// backlogPollFailed records a failed poll of nsqd's /stats.
func (m *metrics) backlogPollFailed() {
	m.backlogFailures.Inc()
	if m.cw != nil {
		m.cw.backlogFailures.Inc()
	}
}

// stall records the open nsqd connections and the time since the last message.
func (m *metrics) stall(conns int, sinceLast time.Duration) {
	m.nsqdConns.Set(float64(conns))
	m.sinceLast.Set(sinceLast.Seconds())
	if m.cw != nil {
		m.cw.nsqdConns.Set(float64(conns))
		m.cw.sinceLast.Set(sinceLast.Seconds())
	}
}

// channelClients records the bridge's RDY and the other clients on its channel.
func (m *metrics) channelClients(cc channelClients) {
	m.rdy.Set(float64(cc.rdy))
	m.otherClients.Set(float64(cc.others))
	if m.cw != nil {
		m.cw.rdy.Set(float64(cc.rdy))
		m.cw.otherClients.Set(float64(cc.others))
	}
}
