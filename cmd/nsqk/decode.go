package main

import (
	"context"
	"errors"
	"flag"

	"github.com/peterbourgon/ff/v3/ffcli"
)

// decodeCommand is a placeholder until shared/kpl lands (issue #2).
func decodeCommand() *ffcli.Command {
	return &ffcli.Command{
		Name:       "decode",
		ShortUsage: "nsqk decode < records.b64",
		ShortHelp:  "decode base64 Kinesis record data (one per line) into JSON",
		FlagSet:    flag.NewFlagSet("decode", flag.ContinueOnError),
		Exec:       func(context.Context, []string) error { return errors.New("decode: not implemented yet") },
	}
}
