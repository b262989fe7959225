// Command seen is a team's own consumer as the dev test runs it: it appends "user seq" for every
// location it receives to the file SEEN_FILE names, and refuses (permanently) every user's third
// location, which then goes to its dead-letter queue.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/nsqk/nsqk/shared/consumer"
	"github.com/nsqk/nsqk/shared/location"
)

func main() {
	f, err := os.OpenFile(os.Getenv("SEEN_FILE"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	consumer.Main("seen", func(_ context.Context, r consumer.Record) error {
		m, err := location.Parse(r.Data)
		if err != nil {
			return consumer.Permanent(err)
		}
		// One write per line: with O_APPEND the lines of concurrent processes do not mix.
		if _, err := fmt.Fprintf(f, "%s %d\n", m.UserID, m.Seq); err != nil {
			return err
		}
		if m.Seq == 3 {
			return consumer.Permanent(fmt.Errorf("seen: the third location of %s is refused", m.UserID))
		}
		return nil
	})
}
