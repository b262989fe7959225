// Command lastlocation is the `lastlocation` Lambda function (provided.al2023, handler
// bootstrap): it keeps the last known location of every user in DynamoDB (table from
// NSQK_LOCATIONS_TABLE, partition key user_id). See shared/lastlocation.
//
// Locally, `lastlocation -invoke EVENT.json` runs the handler once on a Lambda event file with
// the in-memory store and prints the response on stdout (metrics and logs go to stderr): that is
// `make invoke FN=lastlocation`.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/nsqk/nsqk/shared/consumer"
	"github.com/nsqk/nsqk/shared/lastlocation"
)

func main() {
	invoke := flag.String("invoke", "", "run the handler once on this Lambda event file (in-memory store) and print the response")
	flag.Parse()
	name := os.Getenv("AWS_LAMBDA_FUNCTION_NAME")
	if name == "" {
		name = "lastlocation"
	}
	ctx := context.Background()
	cfg := lastlocation.Config{FunctionName: name}
	if *invoke != "" {
		cfg.Store = lastlocation.NewMemoryStore()
		cfg.Metrics = os.Stderr
		cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
		f := lastlocation.New(cfg)
		if err := consumer.InvokeFile(ctx, lambda.NewHandler(f.Handle), *invoke, name, 30*time.Second, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "lastlocation:", err)
			os.Exit(1)
		}
		return
	}
	table := os.Getenv(lastlocation.TableEnv)
	if table == "" {
		fmt.Fprintln(os.Stderr, "lastlocation: "+lastlocation.TableEnv+" is not set")
		os.Exit(1)
	}
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lastlocation: AWS config:", err)
		os.Exit(1)
	}
	cfg.Store = lastlocation.NewDynamoStore(dynamodb.NewFromConfig(awsCfg), table)
	lambda.Start(lastlocation.New(cfg).Handle)
}
