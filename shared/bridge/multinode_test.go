package bridge

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// nsqd message ids are unique per nsqd only (nodes with one --node-id issue the same ids): two
// messages of one id from two nodes, next to each other in one record, are two messages
// acknowledged, not one delivered twice.
func TestSameIDFromTwoNodesCountsAsTwoAcked(t *testing.T) {
	o := NewOptions()
	b := unitBridge(t, o, 1)
	a := newTestMsg(hexID(8), "nsqd-a:4150", 1, userBody("c", 1))
	c := newTestMsg(hexID(8), "nsqd-b:4150", 1, userBody("d", 1))
	b.HandleMessage(a.Message)
	b.HandleMessage(c.Message)
	flushAll(t, b)
	if a.fin != 1 || c.fin != 1 {
		t.Fatalf("FINs %d %d", a.fin, c.fin)
	}
	if got := testutil.ToFloat64(b.m.messagesAcked); got != 2 {
		t.Fatalf("messages acked %v, want 2", got)
	}
	var m dto.Metric
	if err := b.m.ackLatency.Write(&m); err != nil || m.GetHistogram().GetSampleCount() != 2 {
		t.Fatalf("ack latency samples %d (%v), want 2", m.GetHistogram().GetSampleCount(), err)
	}
}
