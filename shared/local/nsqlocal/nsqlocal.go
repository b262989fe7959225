// Package nsqlocal runs a real nsqd (and optionally nsqlookupd) inside the current process, on
// loopback ports, for `nsqk dev`, the benchmarks, the fault suite and the tests. It is the embeddable
// package the nsqd binary itself is built from (github.com/nsqio/nsq/nsqd), not a fake.
package nsqlocal

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nsqio/nsq/nsqd"
	"github.com/nsqio/nsq/nsqlookupd"
)

// Options configures an embedded nsqd. Zero values take the defaults noted on each field.
type Options struct {
	// TCPAddress and HTTPAddress to listen on; default 127.0.0.1:0 (a free port). Set them to
	// restart an nsqd on the same address.
	TCPAddress  string
	HTTPAddress string
	// DataPath holds the on-disk queue; default a fresh temporary directory removed by Stop.
	// Set it (and keep it) to restart an nsqd with its queued messages.
	DataPath string
	// MsgTimeout is the server default message timeout; default nsqd's 60 s.
	MsgTimeout time.Duration
	// MaxMsgTimeout caps a message's total time in flight, TOUCHes included; default nsqd's 15m.
	MaxMsgTimeout time.Duration
	// MaxRdyCount caps a client's RDY; default nsqd's 2500.
	MaxRdyCount int64
	// MemQueueSize is the number of messages kept in memory per topic/channel; default nsqd's 10000.
	// A channel deeper than that spills to disk, and nsqd then interleaves its memory and disk
	// queues: messages are no longer delivered in publish order.
	MemQueueSize int64
	// DiskOnly sets nsqd's --mem-queue-size=0: every message goes through the disk queue, which is
	// FIFO, so delivery follows publish order however deep the channel gets.
	DiskOnly bool
	// QueueScanRefreshInterval defaults to 100 ms (nsqd uses 5 s, which delays timeouts in tests).
	QueueScanRefreshInterval time.Duration
	// LookupdTCPAddresses to register with.
	LookupdTCPAddresses []string
	// Logger receives nsqd's warnings and errors; default discards them.
	Logger *slog.Logger

	// TLSCert and TLSKey (PEM files) let clients upgrade to TLS. TLSRootCAFile holds the CAs that
	// client certificates are verified against.
	TLSCert, TLSKey, TLSRootCAFile string
	// TLSRequired refuses TCP clients that do not upgrade to TLS (nsqd's --tls-required=tcp-https;
	// the HTTP API stays plaintext).
	TLSRequired bool
	// TLSClientAuthPolicy is nsqd's --tls-client-auth-policy: "require" or "require-verify" (a
	// client certificate signed by TLSRootCAFile); either implies TLSRequired.
	TLSClientAuthPolicy string
	// AuthHTTPAddresses are nsqd's --auth-http-address: clients must AUTH, and nsqd asks these
	// servers what the secret allows.
	AuthHTTPAddresses []string
}

// NSQD is a running embedded nsqd.
type NSQD struct {
	*nsqd.NSQD
	// TCPAddr and HTTPAddr are the bound addresses (host:port).
	TCPAddr  string
	HTTPAddr string
	tmpDir   string
	done     chan error
	stopOnce sync.Once
}

// Start starts an nsqd and returns once it accepts connections.
func Start(o Options) (*NSQD, error) {
	opts := nsqd.NewOptions()
	opts.TCPAddress = or(o.TCPAddress, "127.0.0.1:0")
	opts.HTTPAddress = or(o.HTTPAddress, "127.0.0.1:0")
	opts.HTTPSAddress = ""
	opts.BroadcastAddress = "127.0.0.1"
	opts.LogLevel = nsqd.LOG_WARN
	opts.Logger = logAdapter{orDiscard(o.Logger).With("component", "nsqd")}
	opts.QueueScanRefreshInterval = 100 * time.Millisecond
	if o.QueueScanRefreshInterval > 0 {
		opts.QueueScanRefreshInterval = o.QueueScanRefreshInterval
	}
	if o.MsgTimeout > 0 {
		opts.MsgTimeout = o.MsgTimeout
	}
	if o.MaxMsgTimeout > 0 {
		opts.MaxMsgTimeout = o.MaxMsgTimeout
	}
	if o.MaxRdyCount > 0 {
		opts.MaxRdyCount = o.MaxRdyCount
	}
	if o.MemQueueSize > 0 {
		opts.MemQueueSize = o.MemQueueSize
	}
	if o.DiskOnly {
		opts.MemQueueSize = 0
	}
	opts.NSQLookupdTCPAddresses = o.LookupdTCPAddresses
	opts.TLSCert, opts.TLSKey, opts.TLSRootCAFile = o.TLSCert, o.TLSKey, o.TLSRootCAFile
	opts.TLSClientAuthPolicy = o.TLSClientAuthPolicy
	if o.TLSRequired || o.TLSClientAuthPolicy != "" {
		opts.TLSRequired = nsqd.TLSRequiredExceptHTTP
	}
	opts.AuthHTTPAddresses = o.AuthHTTPAddresses
	n := &NSQD{done: make(chan error, 1)}
	opts.DataPath = o.DataPath
	if opts.DataPath == "" {
		dir, err := os.MkdirTemp("", "nsqk-nsqd-")
		if err != nil {
			return nil, err
		}
		n.tmpDir, opts.DataPath = dir, dir
	}
	d, err := nsqd.New(opts)
	if err != nil {
		n.cleanup()
		return nil, fmt.Errorf("nsqlocal: %w", err)
	}
	n.NSQD = d
	n.TCPAddr = d.RealTCPAddr().String()
	n.HTTPAddr = d.RealHTTPAddr().String()
	go func() { n.done <- d.Main() }()
	return n, nil
}

// Stop shuts nsqd down (persisting its metadata and queues) and removes a temporary data path.
// Calling it again does nothing.
func (n *NSQD) Stop() {
	n.stopOnce.Do(func() {
		n.Exit()
		<-n.done
		n.cleanup()
	})
}

func (n *NSQD) cleanup() {
	if n.tmpDir != "" {
		os.RemoveAll(n.tmpDir)
	}
}

// Depth returns the number of messages waiting (in memory, on disk, deferred and in flight) in
// topic/channel; 0 when either does not exist.
func (n *NSQD) Depth(topic, channel string) int64 {
	stats := n.GetStats(topic, channel, false)
	for _, t := range stats.Topics {
		for _, c := range t.Channels {
			return c.Depth + int64(c.InFlightCount) + int64(c.DeferredCount)
		}
	}
	return 0
}

// Lookupd is a running embedded nsqlookupd.
type Lookupd struct {
	*nsqlookupd.NSQLookupd
	TCPAddr  string
	HTTPAddr string
	done     chan error
	stopOnce sync.Once
}

// StartLookupd starts an nsqlookupd on free loopback ports.
func StartLookupd(logger *slog.Logger) (*Lookupd, error) {
	opts := nsqlookupd.NewOptions()
	opts.TCPAddress = "127.0.0.1:0"
	opts.HTTPAddress = "127.0.0.1:0"
	opts.BroadcastAddress = "127.0.0.1"
	opts.LogLevel = nsqd.LOG_WARN
	opts.Logger = logAdapter{orDiscard(logger).With("component", "nsqlookupd")}
	l, err := nsqlookupd.New(opts)
	if err != nil {
		return nil, fmt.Errorf("nsqlocal: %w", err)
	}
	lk := &Lookupd{NSQLookupd: l, TCPAddr: l.RealTCPAddr().String(), HTTPAddr: l.RealHTTPAddr().String(), done: make(chan error, 1)}
	go func() { lk.done <- l.Main() }()
	return lk, nil
}

// Stop shuts nsqlookupd down; calling it again does nothing.
func (l *Lookupd) Stop() {
	l.stopOnce.Do(func() {
		l.Exit()
		<-l.done
	})
}

// logAdapter routes nsq's line logger into slog.
type logAdapter struct{ l *slog.Logger }

func (a logAdapter) Output(_ int, s string) error {
	s = strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(s, "ERROR") || strings.HasPrefix(s, "FATAL"):
		a.l.Error(s)
	default:
		a.l.Warn(s)
	}
	return nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
