package kinesislocal

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
)

func TestEmulatorsCreateStreamAndPut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node emulators")
	}
	for _, kind := range []Kind{Kinesalite, KinesisMock} {
		t.Run(string(kind), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			e, err := Start(ctx, Options{Kind: kind})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			c := e.Client()
			if err := CreateStream(ctx, c, "s", 2); err != nil {
				t.Fatal(err)
			}
			shards, err := c.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String("s")})
			if err != nil {
				t.Fatal(err)
			}
			if len(shards.Shards) != 2 {
				t.Fatalf("got %d shards, want 2", len(shards.Shards))
			}
			out, err := c.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String("s"), PartitionKey: aws.String("k"), Data: []byte("x")})
			if err != nil {
				t.Fatal(err)
			}
			if aws.ToString(out.SequenceNumber) == "" {
				t.Fatal("no sequence number")
			}
		})
	}
}
