package chaos

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/nsqk/nsqk/shared/local/esm"
)

// esmCases run the consumer under the event source mapping rules AWS leaves open or that a local
// run otherwise never shows: a fresh function instance for every invocation, invocations that
// stop at their deadline, discards consolidated into one range, throttles and duplicate
// deliveries.
func esmCases() []Case {
	return []Case{
		{Name: "consumer-fresh-instances", Group: "consumer",
			Summary: "a poison user record; every invocation in a new function instance (no memory survives an invocation)",
			Rule: "on-failure holds exactly the bad Kinesis record; lost=0, reordered=0; duplicated=0 " +
				"(the checkpoint store, outside the instances, skips processed sub-records); one instance per invocation",
			Run: func(ctx context.Context, t *T) error {
				return consumerRun(ctx, t, consumerSpec{kind: faultPoison,
					esm: func(c *esm.Config) { c.InstancePerInvocation = true },
					check: func(t *T, s esm.Stats, _ Accounting) {
						t.Check("one instance per invocation", s.Instances == s.Invocations, "%d instances for %d invocations", s.Instances, s.Invocations)
					}})
			}},
		{Name: "consumer-deadline-stop", Group: "consumer", Quick: true,
			Summary: fmt.Sprintf("a slow store (8 ms per user record): a batch of 100 user records needs two %v invocations; MaximumRetryAttempts=%d", consumerTimeout, consumerRetries),
			Rule: "the processor stops before the deadline and reports the next record (a partial success, counted as a retry attempt); " +
				"nothing reaches the on-failure destination; lost=0, reordered=0, duplicated=0",
			Run: func(ctx context.Context, t *T) error {
				return consumerRun(ctx, t, consumerSpec{slow: 8 * time.Millisecond,
					check: func(t *T, s esm.Stats, _ Accounting) {
						stops := len(grepFile(filepath.Join(t.Dir, "esm.log"), "stopped before the invocation deadline"))
						t.Check("invocations stopped at their deadline", stops > 0 && s.PartialFailures > 0,
							"%d deadline stops logged, %d partial responses", stops, s.PartialFailures)
						t.Check("nothing healthy discarded", s.OnFailureRecords == 0, "%d Kinesis records to on-failure", s.OnFailureRecords)
					}})
			}},
		{Name: "consumer-consolidated-discard", Group: "consumer",
			Summary: "two poison user records in one batch (Kinesis records 20 and 23 of shard 0); discards consolidated into one invocation record",
			Rule: "on-failure holds one invocation record spanning records 20..23 (batchSize 4): the documented range; the healthy records " +
				"inside it were processed; lost=0, reordered=0, duplicated=0",
			Run: func(ctx context.Context, t *T) error {
				return consumerRun(ctx, t, consumerSpec{kind: faultPoison, bads: []badAt{{20, 4}, {23, 2}},
					esm:      func(c *esm.Config) { c.ConsolidateDiscards = true },
					discards: [][2]int{{20, 23}}})
			}},
		{Name: "consumer-throttle-duplicate", Group: "consumer",
			Summary: "a poison user record; every third invocation attempt throttled, every fifth successful batch delivered twice",
			Rule: "throttles cost no retry: on-failure holds exactly the bad Kinesis record; lost=0, reordered=0; " +
				"duplicates only from the injected duplicate deliveries",
			Run: func(ctx context.Context, t *T) error {
				var mu sync.Mutex
				attempts, successes := 0, 0
				return consumerRun(ctx, t, consumerSpec{kind: faultPoison,
					duplicates: "AWS delivers at least once; the injected duplicate deliveries are processed again",
					esm: func(c *esm.Config) {
						c.Faults.Throttle = func(string, string) bool {
							mu.Lock()
							defer mu.Unlock()
							attempts++
							return attempts%3 == 0
						}
						c.Faults.Duplicate = func(string, string) bool {
							mu.Lock()
							defer mu.Unlock()
							successes++
							return successes%5 == 0
						}
					},
					check: func(t *T, s esm.Stats, a Accounting) {
						t.Check("throttles and duplicate deliveries happened", s.Throttles > 0 && s.Duplicates > 0,
							"%d throttles, %d duplicate deliveries", s.Throttles, s.Duplicates)
						t.Check("duplicates only from duplicate deliveries", (a.Duplicated > 0) == (s.Duplicates > 0),
							"%d duplicated user records, %d duplicate deliveries", a.Duplicated, s.Duplicates)
					}})
			}},
	}
}
