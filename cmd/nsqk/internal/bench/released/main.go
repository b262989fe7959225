// Command released is the benchmark's second physical-limit consumer: the same do-nothing go-nsq
// consumer as `nsqk bench baseline`, built against go-nsq v1.1.0 exactly as released (this
// directory is its own module, so nsqk's patched copy in third_party/go-nsq does not apply).
// `nsqk bench --released-baseline PATH` runs it next to the patched baseline and the bridge, so
// what the patch is worth is measured in the same run. It takes the flags of `nsqk bench
// baseline`, runs until SIGTERM and then prints {"received":N}.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nsqio/go-nsq"
)

func main() {
	fs := flag.NewFlagSet("released", flag.ExitOnError)
	addr := fs.String("nsqd-tcp-address", "", "nsqd TCP address")
	topic := fs.String("topic", "", "topic")
	channel := fs.String("channel", "", "channel")
	maxInFlight := fs.Int("max-in-flight", 2500, "max in flight (RDY)")
	msgTimeout := fs.Duration("msg-timeout", 60*time.Second, "message timeout asked of nsqd")
	fs.Parse(os.Args[1:])
	if *addr == "" || *topic == "" || *channel == "" {
		fmt.Fprintln(os.Stderr, "released: --nsqd-tcp-address, --topic and --channel are required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := run(ctx, *addr, *topic, *channel, *maxInFlight, *msgTimeout)
	json.NewEncoder(os.Stdout).Encode(map[string]int64{"received": n})
	if err != nil {
		fmt.Fprintln(os.Stderr, "released:", err)
		os.Exit(1)
	}
}

// run mirrors runBaseline and baselineConfig in cmd/nsqk/internal/bench/baseline.go.
func run(ctx context.Context, addr, topic, channel string, maxInFlight int, msgTimeout time.Duration) (int64, error) {
	cfg := nsq.NewConfig()
	cfg.MaxInFlight = maxInFlight
	cfg.MsgTimeout = msgTimeout
	cfg.MaxAttempts = 0
	cfg.OutputBufferTimeout = 25 * time.Millisecond
	cfg.UserAgent = "nsqk-bench-released"
	c, err := nsq.NewConsumer(topic, channel, cfg)
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
		return received.Load(), fmt.Errorf("consumer did not stop")
	}
	return received.Load(), nil
}
