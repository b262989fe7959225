package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"text/tabwriter"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/nsqk/nsqk/cmd/nsqk/internal/chaos"
)

// revision describes the checkout under test: the commit, and the bridge files changed since.
func revision() string {
	head, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	rev := strings.TrimSpace(string(head))
	dirty, _ := exec.Command("git", "status", "--porcelain", "--", "shared/bridge", "shared/bridgecmd", "shared/kpl").Output()
	if n := len(strings.Fields(string(dirty))) / 2; n > 0 {
		rev += fmt.Sprintf(" + %d uncommitted bridge/kpl files", n)
	}
	return rev
}

type caseList []string

func (c *caseList) String() string     { return strings.Join(*c, ",") }
func (c *caseList) Set(v string) error { *c = append(*c, v); return nil }

func chaosCommand() *ffcli.Command {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "run the quick cases with shortened fault windows (with --case: those cases, shortened)")
	var cases caseList
	fs.Var(&cases, "case", "run only this case (repeatable; NAME* matches a prefix; names may also follow the flags)")
	out := fs.String("out", ".chaos/report.json", "JSON report path (empty = none)")
	dir := fs.String("dir", ".chaos", "folder for each case's logs")
	list := fs.Bool("list", false, "list the cases and exit")
	verbose := fs.Bool("v", false, "print every check and note, not only the failing ones")
	return &ffcli.Command{
		Name:       "chaos",
		ShortUsage: "nsqk chaos [--quick] [--case NAME ...] [--out .chaos/report.json] [--list] [-v]",
		ShortHelp:  "run the fault suite: faults, kills, resharding, bad input, consumer failures; exact accounting per case",
		LongHelp: "Runs each case against an embedded nsqd and a local Kinesis (kinesalite; kinesis-mock for resharding)\n" +
			"behind a fault-injecting front, with the bridge in process or as a child `nsqk bridge`, and prints one row\n" +
			"per case: published / delivered / duplicated / lost / reordered / dead-lettered and PASS or FAIL with the\n" +
			"rule it was judged by. Exit status 1 if any case fails. Needs the Node tooling (make tools).",
		FlagSet: fs,
		Exec: func(ctx context.Context, args []string) error {
			cases = append(cases, args...)
			if *list {
				tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
				for _, c := range chaos.Cases() {
					q := ""
					if c.Quick {
						q = "quick"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, c.Group, q, c.Summary)
				}
				return tw.Flush()
			}
			launch, unpin, err := chaos.ExecutableLauncher(*dir)
			if err != nil {
				return err
			}
			defer unpin()
			rep, err := chaos.Run(ctx, chaos.Config{Quick: *quick, Cases: cases, Dir: *dir, Bridge: launch, Progress: os.Stderr,
				Revision: revision()})
			if rep == nil {
				return err
			}
			fmt.Println()
			rep.WriteTable(os.Stdout, *verbose)
			if *out != "" {
				if werr := rep.WriteJSON(*out); werr != nil {
					return werr
				}
				fmt.Printf("\nreport: %s\n", *out)
			}
			if err != nil {
				return err
			}
			if rep.Failed > 0 {
				return errors.New(fmt.Sprint(rep.Failed, " of ", len(rep.Cases), " cases failed"))
			}
			return nil
		},
	}
}
