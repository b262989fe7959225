package lastlocation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/nsqk/nsqk/shared/consumer"
)

// TableEnv names the environment variable holding the DynamoDB table name in AWS.
const TableEnv = "NSQK_LOCATIONS_TABLE"

// DynamoAPI is the part of the DynamoDB client the store uses — exactly the two actions the
// function's IAM policy grants (dynamodb:UpdateItem, dynamodb:GetItem).
type DynamoAPI interface {
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
}

// DynamoStore keeps last locations in a DynamoDB table with partition key user_id (S). Each
// Put is one conditional UpdateItem ("attribute_not_exists(seq) OR seq < :seq"), so that a write
// never replaces a newer location, whatever the order writes arrive in. A rejected write asks
// for the stored item with the exception (ReturnValuesOnConditionCheckFailure); where the item
// does not come back (dynalite), it is read with a consistent GetItem.
type DynamoStore struct {
	c     DynamoAPI
	table string
}

// NewDynamoStore returns a store on table.
func NewDynamoStore(c DynamoAPI, table string) *DynamoStore { return &DynamoStore{c: c, table: table} }

// Attribute names; all go through ExpressionAttributeNames so that none can clash with a
// DynamoDB reserved word.
var attrNames = map[string]string{
	"#seq": "seq", "#ts": "ts", "#lat": "lat", "#lon": "lon", "#acc": "acc", "#speed": "speed",
	"#heading": "heading", "#shard": "shard_id", "#sn": "sequence_number", "#sub": "sub_sequence",
	"#upd": "updated_at",
}

const updateExpr = "SET #seq = :seq, #ts = :ts, #lat = :lat, #lon = :lon, #acc = :acc, #speed = :speed, " +
	"#heading = :heading, #shard = :shard, #sn = :sn, #sub = :sub, #upd = :upd"

const conditionExpr = "attribute_not_exists(#seq) OR #seq < :seq"

func num[T int | int64 | uint64](v T) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: fmt.Sprint(v)}
}

func flt(v float64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatFloat(v, 'f', -1, 64)}
}

// Put implements Store.
func (s *DynamoStore) Put(ctx context.Context, l Location) (PutResult, error) {
	_, err := s.c.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                aws.String(s.table),
		Key:                      map[string]types.AttributeValue{"user_id": &types.AttributeValueMemberS{Value: l.UserID}},
		UpdateExpression:         aws.String(updateExpr),
		ConditionExpression:      aws.String(conditionExpr),
		ExpressionAttributeNames: attrNames,
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":seq": num(l.Seq), ":ts": num(l.TS), ":lat": flt(l.Lat), ":lon": flt(l.Lon),
			":acc": flt(l.Accuracy), ":speed": flt(l.Speed), ":heading": num(l.Heading),
			":shard": &types.AttributeValueMemberS{Value: orDash(l.ShardID)},
			":sn":    &types.AttributeValueMemberS{Value: orDash(l.SequenceNumber)},
			":sub":   num(l.SubSequence), ":upd": num(l.UpdatedAt),
		},
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		if v, ok := ccf.Item["seq"].(*types.AttributeValueMemberN); ok {
			if stored, perr := strconv.ParseUint(v.Value, 10, 64); perr == nil {
				return PutResult{StoredSeq: stored}, nil
			}
		}
		// Implementations without ReturnValuesOnConditionCheckFailure (dynalite) return no
		// item: read it. The stored seq only grows, so the read sees the seq that rejected the
		// write or a newer one; either way the write was rightly rejected.
		stored, ok, gerr := s.Get(ctx, l.UserID)
		if gerr != nil {
			return PutResult{}, fmt.Errorf("read after a rejected write: %w", gerr)
		}
		if !ok {
			return PutResult{}, fmt.Errorf("write of %s seq %d rejected, but no item is stored", l.UserID, l.Seq)
		}
		return PutResult{StoredSeq: stored.Seq}, nil
	}
	if err != nil {
		return PutResult{}, err
	}
	return PutResult{Applied: true}, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Get implements Store (a strongly consistent read).
func (s *DynamoStore) Get(ctx context.Context, userID string) (Location, bool, error) {
	out, err := s.c.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            map[string]types.AttributeValue{"user_id": &types.AttributeValueMemberS{Value: userID}},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil || out.Item == nil {
		return Location{}, false, err
	}
	it := out.Item
	l := Location{UserID: userID}
	l.Seq, _ = strconv.ParseUint(nval(it, "seq"), 10, 64)
	l.TS, _ = strconv.ParseInt(nval(it, "ts"), 10, 64)
	l.Lat, _ = strconv.ParseFloat(nval(it, "lat"), 64)
	l.Lon, _ = strconv.ParseFloat(nval(it, "lon"), 64)
	l.Accuracy, _ = strconv.ParseFloat(nval(it, "acc"), 64)
	l.Speed, _ = strconv.ParseFloat(nval(it, "speed"), 64)
	l.Heading, _ = strconv.Atoi(nval(it, "heading"))
	l.SubSequence, _ = strconv.Atoi(nval(it, "sub_sequence"))
	l.UpdatedAt, _ = strconv.ParseInt(nval(it, "updated_at"), 10, 64)
	if v, ok := it["shard_id"].(*types.AttributeValueMemberS); ok {
		l.ShardID = v.Value
	}
	if v, ok := it["sequence_number"].(*types.AttributeValueMemberS); ok {
		l.SequenceNumber = v.Value
	}
	return l, true, nil
}

func nval(it map[string]types.AttributeValue, k string) string {
	if v, ok := it[k].(*types.AttributeValueMemberN); ok {
		return v.Value
	}
	return ""
}

// StoreFromEnv returns the store the environment names: a DynamoStore on the table in
// NSQK_LOCATIONS_TABLE; without it, under -invoke (env.Local) a MemoryStore and in Lambda an
// error. It logs which.
func StoreFromEnv(env consumer.Env) (Store, error) {
	table := os.Getenv(TableEnv)
	log := env.Setup.Logger
	if log == nil {
		log = slog.Default()
	}
	switch {
	case table != "":
		log.Info("locations in DynamoDB", "table", table)
		return NewDynamoStore(dynamodb.NewFromConfig(env.AWS), table), nil
	case env.Local:
		log.Info("locations in memory: " + TableEnv + " is not set")
		return NewMemoryStore(), nil
	}
	return nil, errors.New(TableEnv + " is not set")
}
