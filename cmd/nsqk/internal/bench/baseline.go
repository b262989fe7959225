package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/nsqio/go-nsq"
	"github.com/peterbourgon/ff/v3/ffcli"
)

// baselineCommand is the physical limit `nsqk bench` measures the bridge against: a plain
// go-nsq consumer with the bridge's NSQ settings whose handler does nothing, so go-nsq FINs every
// message as soon as it is delivered. It runs until SIGTERM and then prints {"received":N}.
func baselineCommand() *ffcli.Command {
	var addr, topic, channel string
	var maxInFlight int
	var msgTimeout time.Duration
	fs := flag.NewFlagSet("bench baseline", flag.ContinueOnError)
	fs.StringVar(&addr, "nsqd-tcp-address", "", "nsqd TCP address")
	fs.StringVar(&topic, "topic", "", "topic")
	fs.StringVar(&channel, "channel", "", "channel")
	fs.IntVar(&maxInFlight, "max-in-flight", 2500, "max in flight (RDY)")
	fs.DurationVar(&msgTimeout, "msg-timeout", 60*time.Second, "message timeout asked of nsqd")
	return &ffcli.Command{
		Name:       "baseline",
		ShortUsage: "nsqk bench baseline --nsqd-tcp-address A --topic T --channel C [--max-in-flight N]",
		ShortHelp:  "internal: the physical-limit consumer nsqk bench runs (go-nsq, FIN at once)",
		FlagSet:    fs,
		Exec: func(ctx context.Context, _ []string) error {
			if addr == "" || topic == "" || channel == "" {
				return fmt.Errorf("bench baseline: --nsqd-tcp-address, --topic and --channel are required")
			}
			n, err := runBaseline(ctx, addr, topic, channel, maxInFlight, msgTimeout)
			json.NewEncoder(os.Stdout).Encode(map[string]int64{"received": n})
			return err
		},
	}
}

// baselineConfig mirrors the NSQ side of the bridge's configuration (shared/bridge nsqConfig):
// same max-in-flight, message timeout, output buffer timeout and max-attempts handling, so the
// only difference is what happens to a message after it arrives.
func baselineConfig(maxInFlight int, msgTimeout time.Duration) *nsq.Config {
	cfg := nsq.NewConfig()
	cfg.MaxInFlight = maxInFlight
	cfg.MsgTimeout = msgTimeout
	cfg.MaxAttempts = 0
	cfg.OutputBufferTimeout = 25 * time.Millisecond
	cfg.UserAgent = "nsqk-bench-baseline"
	return cfg
}

func runBaseline(ctx context.Context, addr, topic, channel string, maxInFlight int, msgTimeout time.Duration) (int64, error) {
	c, err := nsq.NewConsumer(topic, channel, baselineConfig(maxInFlight, msgTimeout))
	if err != nil {
		return 0, err
	}
	c.SetLogger(nil, nsq.LogLevelError)
	var received atomic.Int64
	c.AddHandler(nsq.HandlerFunc(func(*nsq.Message) error {
		received.Add(1)
		return nil // go-nsq FINs it
	}))
	if err := c.ConnectToNSQD(addr); err != nil {
		return 0, err
	}
	<-ctx.Done()
	c.Stop()
	select {
	case <-c.StopChan:
	case <-time.After(30 * time.Second):
		return received.Load(), fmt.Errorf("bench baseline: consumer did not stop")
	}
	return received.Load(), nil
}
