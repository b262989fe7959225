package bridge

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nsqio/go-nsq"
)

// Partition splits the nsqd nodes of a topic among N bridges: bridge Index (0-based) of Count
// reads the nodes whose rendezvous (highest random weight) hash picks Index. A node's owner
// depends only on its address and Count, so it never changes when other nodes come and go; and
// when Count changes, only the nodes the new or removed index wins or loses move.
type Partition struct{ Index, Count int }

// ParsePartition reads "i/N" (0 <= i < N).
func ParsePartition(s string) (Partition, error) {
	is, ns, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(is)
	n, err2 := strconv.Atoi(ns)
	if !ok || err1 != nil || err2 != nil {
		return Partition{}, fmt.Errorf("%q: want i/N, e.g. 0/2", s)
	}
	p := Partition{Index: i, Count: n}
	return p, p.check()
}

func (p Partition) String() string {
	if p.Count == 0 {
		return ""
	}
	return fmt.Sprintf("%d/%d", p.Index, p.Count)
}

func (p Partition) check() error {
	if p.Count < 1 || p.Count > 1000 || p.Index < 0 || p.Index >= p.Count {
		return fmt.Errorf("%d/%d: want 0 <= i < N <= 1000", p.Index, p.Count)
	}
	return nil
}

func (p Partition) validate(lookupd bool) error {
	if p.Count == 0 {
		return nil
	}
	if err := p.check(); err != nil {
		return fmt.Errorf("--nsqd-partition %w", err)
	}
	if !lookupd {
		return errors.New("--nsqd-partition needs --lookupd-http-address: it picks among the nodes nsqlookupd lists")
	}
	return nil
}

// Owner returns the index of the bridge that reads the nsqd at addr (broadcast address and TCP
// port, as nsqlookupd lists it).
func (p Partition) Owner(addr string) int {
	best, owner := uint64(0), 0
	for i := range p.Count {
		h := sha256.Sum256([]byte(addr + "\x00" + strconv.Itoa(i)))
		if w := binary.BigEndian.Uint64(h[:8]); i == 0 || w > best {
			best, owner = w, i
		}
	}
	return owner
}

// Owns reports whether this bridge reads the nsqd at addr; without a partition it reads all.
func (p Partition) Owns(addr string) bool { return p.Count == 0 || p.Owner(addr) == p.Index }

// producer is one nsqd that nsqlookupd lists for the topic.
type producer struct {
	BroadcastAddress string `json:"broadcast_address"`
	TCPPort          int    `json:"tcp_port"`
	HTTPPort         int    `json:"http_port"`
}

func (p producer) tcpAddr() string {
	return net.JoinHostPort(p.BroadcastAddress, strconv.Itoa(p.TCPPort))
}

// discover does what go-nsq's ConnectToNSQLookupds does, but connects only to the nodes this
// bridge's partition owns: it asks nsqlookupd for the topic's nodes now and then every
// lookupd_poll_interval. A node that left nsqlookupd is still read while it accepts connections
// (a tombstoned node is drained, as go-nsq does); once it cannot be reached it is forgotten,
// which also ends go-nsq's own reconnect attempts. stop ends the polling and waits for it.
func (b *Bridge) discover(ctx context.Context, consumer *nsq.Consumer) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	client := &http.Client{Timeout: 5 * time.Second}
	known := map[string]bool{} // addresses ConnectToNSQD was called for
	poll := func() {
		listed, err := b.producers(ctx, client)
		if err != nil {
			b.log.Warn("nsqlookupd poll failed", "err", err)
			return
		}
		seen := map[string]bool{}
		for _, p := range listed {
			a := p.tcpAddr()
			seen[a] = true
			if !b.o.NSQDPartition.Owns(a) {
				continue
			}
			err := consumer.ConnectToNSQD(a)
			if err == nil && !known[a] {
				b.log.Info("reading nsqd", "nsqd", a, "partition", b.o.NSQDPartition.String())
			}
			known[a] = true
			if err != nil && !errors.Is(err, nsq.ErrAlreadyConnected) {
				b.log.Warn("cannot connect to nsqd", "nsqd", a, "err", err)
			}
		}
		for a := range known {
			if seen[a] || ctx.Err() != nil {
				continue
			}
			// Gone from nsqlookupd: ErrAlreadyConnected (or a new connection) says it is still up.
			if err := consumer.ConnectToNSQD(a); errors.Is(err, nsq.ErrAlreadyConnected) || err == nil {
				continue
			}
			consumer.DisconnectFromNSQD(a)
			delete(known, a)
			b.log.Info("nsqd gone from nsqlookupd and unreachable: forgotten", "nsqd", a)
		}
	}
	poll()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		every(ctx, b.nsqCfg.LookupdPollInterval, func(time.Time) { poll() })
	}()
	return func() {
		cancel()
		wg.Wait()
	}
}

// producers asks every nsqlookupd for the topic's nodes; a topic no nsqd has yet has none.
func (b *Bridge) producers(ctx context.Context, client *http.Client) ([]producer, error) {
	var out []producer
	seen := map[string]bool{}
	var lastErr error
	for _, l := range b.o.LookupdHTTPAddresses {
		ps, err := lookupTopic(ctx, client, httpURL(l, "/lookup", url.Values{"topic": {b.o.Topic}}))
		if err != nil {
			lastErr = err
			continue
		}
		for _, p := range ps {
			if a := p.tcpAddr(); !seen[a] {
				seen[a] = true
				out = append(out, p)
			}
		}
	}
	// An error only when nothing was found and some nsqlookupd did not answer: a partial answer
	// that names nodes is used, an empty one may be missing the nodes of the silent instance.
	if len(out) == 0 && lastErr != nil {
		return nil, lastErr
	}
	return out, nil
}

// lookupTopic returns the nodes one nsqlookupd lists at u; its 404 says no nsqd has the topic.
func lookupTopic(ctx context.Context, client *http.Client, u string) ([]producer, error) {
	var body struct {
		Producers []producer `json:"producers"`
	}
	if err := getJSON(ctx, client, u, &body); err != nil {
		if errors.Is(err, errNotFound) {
			return nil, nil
		}
		return nil, err
	}
	return body.Producers, nil
}
