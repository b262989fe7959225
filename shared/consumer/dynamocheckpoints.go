package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// CheckpointTableEnv names the environment variable holding the checkpoint table's name; the
// consumer functions use DynamoCheckpoints when it is set, memory otherwise.
const CheckpointTableEnv = "NSQK_CHECKPOINT_TABLE"

// StreamRetentionEnv names the environment variable holding the stream's retention period in
// hours (Kinesis's RetentionPeriodHours), from which the checkpoints' time to live is derived.
const StreamRetentionEnv = "NSQK_STREAM_RETENTION_HOURS"

// MaxStreamRetention is the longest retention Kinesis allows (365 days): the retention assumed
// when none is configured, so that a checkpoint never expires while its aggregate can still be
// redelivered.
const MaxStreamRetention = 8760 * time.Hour

// DynamoCheckpointAPI is the part of the DynamoDB client DynamoCheckpoints uses: exactly the
// actions a function's IAM policy must grant on the checkpoint table (dynamodb:GetItem,
// dynamodb:UpdateItem, dynamodb:DeleteItem).
type DynamoCheckpointAPI interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
}

// DynamoCheckpoints is a CheckpointStore in a DynamoDB table with partition key id (S), shared
// by every instance of a function (cold starts, ParallelizationFactor > 1, concurrent shards) and
// by every function reading the stream:
//
//   - one item per partly processed aggregate, id = function + "/" + shard id + "/" + sequence
//     number (two functions on one stream see the same shard and sequence numbers but make
//     progress of their own), attribute done (N) = the number of leading user records processed;
//   - done only moves upward: a conditional UpdateItem ("attribute_not_exists(done) OR
//     done < :done"), whose failed condition is not an error (a later save already got further);
//   - the item is deleted once the aggregate is finished;
//   - attribute ttl (N, Unix seconds) = save time + stream retention + one day, for the table's
//     time to live: an aggregate older than the retention can no longer be redelivered, and an
//     item left behind (an aggregate handed to the on-failure destination) goes away by itself.
//
// Load is a strongly consistent GetItem, so that a retry on another instance sees the save made
// just before. Safe for concurrent use.
type DynamoCheckpoints struct {
	c     DynamoCheckpointAPI
	table string
	fn    string
	ttl   time.Duration
	now   func() time.Time
}

// NewDynamoCheckpoints returns the store of function (its name: AWS_LAMBDA_FUNCTION_NAME) on
// table. retention is the stream's retention period (<= 0: MaxStreamRetention); items live
// retention + 24 h.
func NewDynamoCheckpoints(c DynamoCheckpointAPI, table, function string, retention time.Duration) *DynamoCheckpoints {
	if retention <= 0 {
		retention = MaxStreamRetention
	}
	return &DynamoCheckpoints{c: c, table: table, fn: function, ttl: retention + 24*time.Hour, now: time.Now}
}

// Table returns the table's name.
func (s *DynamoCheckpoints) Table() string { return s.table }

func (s *DynamoCheckpoints) key(shardID, seq string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{"id": &types.AttributeValueMemberS{Value: s.fn + "/" + shardID + "/" + seq}}
}

// Load implements CheckpointStore.
func (s *DynamoCheckpoints) Load(ctx context.Context, shardID, seq string) (int, error) {
	out, err := s.c.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:                aws.String(s.table),
		Key:                      s.key(shardID, seq),
		ConsistentRead:           aws.Bool(true),
		ProjectionExpression:     aws.String("#done"),
		ExpressionAttributeNames: map[string]string{"#done": "done"},
	})
	if err != nil {
		return 0, err
	}
	v, ok := out.Item["done"].(*types.AttributeValueMemberN)
	if !ok {
		return 0, nil
	}
	done, err := strconv.Atoi(v.Value)
	if err != nil {
		return 0, fmt.Errorf("checkpoint %s/%s: done = %q: %w", shardID, seq, v.Value, err)
	}
	return done, nil
}

// Save implements CheckpointStore.
func (s *DynamoCheckpoints) Save(ctx context.Context, shardID, seq string, done int) error {
	if done <= 0 {
		_, err := s.c.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(s.table), Key: s.key(shardID, seq)})
		return err
	}
	_, err := s.c.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                aws.String(s.table),
		Key:                      s.key(shardID, seq),
		UpdateExpression:         aws.String("SET #done = :done, #ttl = :ttl"),
		ConditionExpression:      aws.String("attribute_not_exists(#done) OR #done < :done"),
		ExpressionAttributeNames: map[string]string{"#done": "done", "#ttl": "ttl"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":done": &types.AttributeValueMemberN{Value: strconv.Itoa(done)},
			":ttl":  &types.AttributeValueMemberN{Value: strconv.FormatInt(s.now().Add(s.ttl).Unix(), 10)},
		},
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return nil
	}
	return err
}
