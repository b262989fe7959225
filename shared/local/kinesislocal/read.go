package kinesislocal

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/nsqk/nsqk/shared/shardmap"
)

// StoredRecord is a record read back from a stream.
type StoredRecord struct {
	ShardID string
	types.Record
}

// ReadAll reads every record of every shard (open and closed) from TRIM_HORIZON to the current
// end, shard by shard, in sequence order within each shard. For tests and tools on emulators.
func ReadAll(ctx context.Context, c *kinesis.Client, stream string) ([]StoredRecord, error) {
	shards, err := shardmap.ListAll(ctx, c, stream)
	if err != nil {
		return nil, err
	}
	var all []StoredRecord
	for _, s := range shards {
		recs, err := ReadShard(ctx, c, stream, aws.ToString(s.ShardId))
		if err != nil {
			return nil, err
		}
		all = append(all, recs...)
	}
	return all, nil
}

// ReadShard reads one shard from TRIM_HORIZON until GetRecords reports it is caught up.
func ReadShard(ctx context.Context, c *kinesis.Client, stream, shardID string) ([]StoredRecord, error) {
	it, err := c.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{StreamName: aws.String(stream),
		ShardId: aws.String(shardID), ShardIteratorType: types.ShardIteratorTypeTrimHorizon})
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w", shardID, err)
	}
	var out []StoredRecord
	iter := it.ShardIterator
	for iter != nil {
		r, err := c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter, Limit: aws.Int32(10000)})
		if err != nil {
			return nil, fmt.Errorf("shard %s: %w", shardID, err)
		}
		for _, rec := range r.Records {
			out = append(out, StoredRecord{ShardID: shardID, Record: rec})
		}
		iter = r.NextShardIterator
		if len(r.Records) == 0 && aws.ToInt64(r.MillisBehindLatest) == 0 {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}
