// Command nsqk-bridge consumes an NSQ topic/channel and writes it to a Kinesis data stream as KPL
// aggregates, one lane per shard, FINishing each message only after Kinesis accepted it. It runs as
// an ECS Fargate service; `nsqk-bridge -h` lists the flags, each also settable as NSQK_<FLAG>.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/nsqk/nsqk/shared/bridgecmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := bridgecmd.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
