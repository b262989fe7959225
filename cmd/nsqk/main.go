// Command nsqk is the developer and operator CLI of the NSQ -> Kinesis bridge: run the whole flow
// locally (dev), read the log back (tail, replay, redrive, failed, decode), and the benchmark and
// fault tools.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/nsqk/nsqk/cmd/nsqk/internal/bench"
	"github.com/nsqk/nsqk/shared/bridgecmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:]))
}

func run(ctx context.Context, args []string) int {
	// `nsqk bridge` is the bridge program itself (functions/bridge), with its own flags and
	// NSQK_* environment variables: one binary for local runs, benchmarks and the fault suite.
	if len(args) > 0 && args[0] == "bridge" {
		return bridgecmd.Main(ctx, args[1:], os.Stdout, os.Stderr)
	}
	root := &ffcli.Command{
		Name:       "nsqk",
		ShortUsage: "nsqk <subcommand> [flags]   (also: nsqk bridge [bridge flags])",
		ShortHelp:  "NSQ -> Kinesis bridge tooling",
		FlagSet:    flag.NewFlagSet("nsqk", flag.ContinueOnError),
		Subcommands: []*ffcli.Command{devCommand(), decodeCommand(), tailCommand(), replayCommand(),
			redriveCommand(), failedCommand(), chaosCommand(), bench.Command()},
		Exec: func(context.Context, []string) error { return flag.ErrHelp },
	}
	if err := root.Parse(args); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "nsqk:", err)
		}
		return 2
	}
	switch err := root.Run(ctx); {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintln(os.Stderr, ffcli.DefaultUsageFunc(root))
		return 2
	default:
		fmt.Fprintln(os.Stderr, "nsqk:", err)
		return 1
	}
}
