package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nsqio/go-nsq"
)

// A bridge can stall without failing: DNS, a security group, AUTH, TLS or lookupd going wrong
// leaves the process running with no nsqd connection. The stall watch publishes what shows it
// (connections, RDY, time since the last message) and turns /healthz unhealthy once the bridge has
// had no nsqd connection for UnhealthyAfter, so that the orchestrator replaces it.

// stallInterval is how often the connection count and the time since the last message are read.
const stallInterval = time.Second

// stallLoop samples the consumer's connections and the time since the last message.
func (b *Bridge) stallLoop(ctx context.Context) {
	b.sampleStall(time.Now())
	every(ctx, stallInterval, b.sampleStall)
}

func (b *Bridge) sampleStall(now time.Time) {
	conns := 0
	if c := b.consumer.Load(); c != nil {
		conns = c.Stats().Connections
	}
	if conns > 0 {
		b.noConnSince.Store(0)
	} else {
		b.noConnSince.CompareAndSwap(0, now.UnixNano())
	}
	last := max(b.lastIn.Load(), b.started.Load())
	b.m.stall(conns, now.Sub(time.Unix(0, last)))
}

// unhealthy returns why the bridge should be replaced: no nsqd connection for UnhealthyAfter. It
// samples the connections first, so that a connection made since the last tick counts.
func (b *Bridge) unhealthy(now time.Time) error {
	if b.o.UnhealthyAfter <= 0 {
		return nil
	}
	b.sampleStall(now)
	since := b.noConnSince.Load()
	if since == 0 || b.topicNowhere.Load() {
		// No nsqd this bridge reads has the topic (nothing was published yet, or every node belongs
		// to another --nsqd-partition group): a new bridge would find none either.
		return nil
	}
	if d := now.Sub(time.Unix(0, since)); d >= b.o.UnhealthyAfter {
		return fmt.Errorf("no nsqd connection for %s (--unhealthy-after %s)", d.Truncate(time.Second), b.o.UnhealthyAfter)
	}
	return nil
}

// watchConsumer hands the consumer to the stall watch. The time without a connection counts from
// Run's start: a bridge that never reaches nsqd turns unhealthy too.
func (b *Bridge) watchConsumer(c *nsq.Consumer) {
	b.consumer.Store(c)
}

// channelClients is what nsqd's /stats says about the bridge's channel beyond its depth.
type channelClients struct {
	own, others int   // connections of this bridge, and of any other client
	rdy         int64 // RDY nsqd counts for this bridge's connections
}

// clientStats is one client of a channel in nsqd's /stats.
type clientStats struct {
	ClientID   string `json:"client_id"`
	Hostname   string `json:"hostname"`
	RemoteAddr string `json:"remote_address"`
	UserAgent  string `json:"user_agent"`
	ReadyCount int64  `json:"ready_count"`
}

// count adds a channel's clients: the bridge's own are those with its client id.
func (cc *channelClients) count(clientID string, clients []clientStats) []clientStats {
	var others []clientStats
	for _, c := range clients {
		if c.ClientID == clientID {
			cc.own++
			cc.rdy += c.ReadyCount
		} else {
			cc.others++
			others = append(others, c)
		}
	}
	return others
}

// reportChannel records the channel's clients and warns when another client shares the channel:
// nsqd splits a channel's messages between its clients, so each gets part of the stream and a
// key's messages are no longer in order.
func (b *Bridge) reportChannel(cc channelClients, others []clientStats) {
	b.m.channelClients(cc)
	prev := b.otherClients.Swap(int64(cc.others))
	if cc.others == 0 {
		if prev != 0 {
			b.log.Info("no other client shares the NSQ channel any more", "topic", b.o.Topic, "channel", b.o.Channel)
		}
		return
	}
	if prev == int64(cc.others) {
		return // warned already
	}
	names := make([]string, 0, len(others))
	for _, c := range others {
		names = append(names, fmt.Sprintf("%s (%s, %s)", c.ClientID, c.RemoteAddr, c.UserAgent))
	}
	b.log.Warn("another client consumes this bridge's NSQ channel: nsqd splits the messages between them, so the stream misses what the others take and a key's messages lose their order",
		"topic", b.o.Topic, "channel", b.o.Channel, "other_clients", cc.others, "clients", strings.Join(names, "; "))
}

// uniqueClientID names this bridge's connections in nsqd's stats, so that they can be told from
// another client on the same channel (go-nsq's default, the short host name, is shared by every
// process of a host).
func uniqueClientID() string {
	host, _ := os.Hostname()
	host, _, _ = strings.Cut(host, ".")
	var r [4]byte
	_, _ = rand.Read(r[:])
	return host + "-" + hex.EncodeToString(r[:])
}
