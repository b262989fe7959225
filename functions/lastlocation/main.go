// Command lastlocation is the `lastlocation` Lambda function (provided.al2023, handler
// bootstrap): it keeps the last known location of every user in DynamoDB (table from
// NSQK_LOCATIONS_TABLE, partition key user_id). See shared/lastlocation.
//
// Locally, `lastlocation -invoke EVENT.json` runs the handler once on a Lambda event file and
// prints the response on stdout (metrics and logs go to stderr): that is `make invoke
// FN=lastlocation`. Without NSQK_LOCATIONS_TABLE it then keeps the locations in memory.
package main

import (
	"context"

	"github.com/nsqk/nsqk/shared/consumer"
	"github.com/nsqk/nsqk/shared/lastlocation"
)

func main() {
	consumer.MainFunc("lastlocation", func(_ context.Context, env consumer.Env) (consumer.LambdaHandler, error) {
		store, err := lastlocation.StoreFromEnv(env)
		if err != nil {
			return nil, err
		}
		return lastlocation.New(lastlocation.Config{FunctionSetup: env.Setup, Store: store}).Handle, nil
	})
}
