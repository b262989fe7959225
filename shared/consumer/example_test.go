package consumer_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nsqk/nsqk/shared/consumer"
)

// A complete consumer function (functions/orders/main.go): one handler per user record, in
// order per shard. An order that is not JSON can never be processed: Permanent sends it to the
// function's dead-letter queue and the batch goes on. Any other error stops the batch there and
// Lambda retries from that record; the sub-records of an aggregate already processed are skipped
// (NSQK_CHECKPOINT_TABLE).
func Example() {
	type order struct {
		ID     string `json:"id"`
		Amount int64  `json:"amount"`
	}
	handle := func(ctx context.Context, r consumer.Record) error {
		var o order
		if err := json.Unmarshal(r.Data, &o); err != nil || o.ID == "" {
			return consumer.Permanent(fmt.Errorf("not an order: %v", err))
		}
		return store(ctx, o.ID, o.Amount) // a transient error: retried from this record
	}
	// In Lambda, Main serves the function; `orders -invoke EVENT.json` runs it once locally.
	consumer.Main("orders", handle)
}

func store(context.Context, string, int64) error { return nil }
