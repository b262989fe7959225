// Command consumer is a consumer function for the lambdart tests: it appends each user record's
// data to the file SEEN_FILE names, and fails (a transient error) on the record whose data is
// FAIL_ONCE the first time any process meets it (a mark in MARKS).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nsqk/nsqk/shared/consumer"
)

func main() {
	seen, err := os.OpenFile(os.Getenv("SEEN_FILE"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	consumer.Main("consumer", func(_ context.Context, r consumer.Record) error {
		if string(r.Data) == os.Getenv("FAIL_ONCE") {
			if f, err := os.OpenFile(filepath.Join(os.Getenv("MARKS"), "failed"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err == nil {
				f.Close()
				return errors.New("failure requested")
			}
		}
		_, err := fmt.Fprintf(seen, "%s\n", r.Data)
		return err
	})
}
