// Command monitor is the `monitor` Lambda function (provided.al2023, handler bootstrap): the
// order and end-to-end latency health signal of the location stream. See shared/monitor.
//
// Locally, `monitor -invoke EVENT.json` runs the handler once on a Lambda event file and prints
// the response on stdout (metrics and logs go to stderr): that is `make invoke FN=monitor`.
package main

import (
	"context"

	"github.com/nsqk/nsqk/shared/consumer"
	"github.com/nsqk/nsqk/shared/monitor"
)

func main() {
	consumer.MainFunc("monitor", func(_ context.Context, env consumer.Env) (consumer.LambdaHandler, error) {
		return monitor.New(monitor.Config{FunctionSetup: env.Setup}).Handle, nil
	})
}
