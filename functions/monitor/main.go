// Command monitor is the `monitor` Lambda function (provided.al2023, handler bootstrap): the
// order and end-to-end latency health signal of the location stream. See shared/monitor.
//
// Locally, `monitor -invoke EVENT.json` runs the handler once on a Lambda event file and prints
// the response on stdout (metrics and logs go to stderr): that is `make invoke FN=monitor`.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/nsqk/nsqk/shared/consumer"
	"github.com/nsqk/nsqk/shared/monitor"
)

func main() {
	invoke := flag.String("invoke", "", "run the handler once on this Lambda event file and print the response")
	flag.Parse()
	name := os.Getenv("AWS_LAMBDA_FUNCTION_NAME")
	if name == "" {
		name = "monitor"
	}
	cfg := monitor.Config{FunctionName: name}
	if *invoke != "" {
		cfg.Metrics = os.Stderr
		cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	m := monitor.New(cfg)
	if *invoke != "" {
		if err := consumer.InvokeFile(context.Background(), lambda.NewHandler(m.Handle), *invoke, name, 30*time.Second, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "monitor:", err)
			os.Exit(1)
		}
		return
	}
	lambda.Start(m.Handle)
}
