package stack

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsdynamodb"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskinesis"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssqs"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/nsqk/nsqk/infra/config"
)

// Exact action lists of the consumer execution roles (the tests compare against these).
var (
	// ConsumerStreamReadActions is what Lambda's Kinesis poller needs on the stream (CDK's
	// stream.grantRead, which KinesisEventSource calls, also adds kinesis:ListStreams,
	// kinesis:SubscribeToShard and kinesis:DescribeStreamConsumer on the stream: not needed there).
	ConsumerStreamReadActions = []string{
		"kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:GetRecords",
		"kinesis:GetShardIterator", "kinesis:ListShards",
	}
	// ConsumerFanOutActions is what an enhanced fan-out mapping needs on its stream consumer.
	ConsumerFanOutActions = []string{"kinesis:DescribeStreamConsumer", "kinesis:SubscribeToShard"}
	// ConsumerLogActions lets the function write to its own log group only.
	ConsumerLogActions = []string{"logs:CreateLogStream", "logs:PutLogEvents"}
	// ConsumerDLQKeyActions is what an SQS producer needs on the queue's KMS key.
	ConsumerDLQKeyActions = []string{"kms:GenerateDataKey", "kms:Decrypt"}
	// LocationsTableActions is what lastlocation does on its table.
	LocationsTableActions = []string{"dynamodb:GetItem", "dynamodb:UpdateItem"}
)

// Exact action lists of the tables, queues and buckets the consumers use.
var (
	// CheckpointTableActions are the calls of the DynamoDB checkpoint store: read a checkpoint,
	// write it, move it up conditionally, delete it when its aggregate is finished.
	CheckpointTableActions = []string{"dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}
	// FailedBatchBucketActions is what Lambda's poller needs to store a failed batch in S3.
	FailedBatchBucketActions = []string{"s3:ListBucket", "s3:PutObject"}
)

// Environment variables the stack passes to every consumer.
const (
	EnvCheckpointTable = "NSQK_CHECKPOINT_TABLE"
	EnvDeadLetterQueue = "NSQK_DEAD_LETTER_QUEUE_URL"
	// EnvStreamRetentionHours sets how long checkpoints live (retention + a margin).
	EnvStreamRetentionHours = "NSQK_STREAM_RETENTION_HOURS"
	EnvLocationsTable       = "NSQK_LOCATIONS_TABLE"
)

// Consumer is one Lambda consumer with its mapping, role, queues and log group.
type Consumer struct {
	Config       config.ConsumerConfig
	FunctionName string
	Function     awslambda.Function
	Role         awsiam.Role
	Policy       awsiam.Policy
	DLQ          awssqs.Queue // on-failure destination of the mapping; nil with the S3 destination
	DeadLetters  awssqs.Queue // user records the function marked permanently failed
	LogGroup     awslogs.LogGroup
	Mapping      awslambda.CfnEventSourceMapping
	FanOut       awskinesis.CfnStreamConsumer // nil without enhanced fan-out
	Table        awsdynamodb.Table            // lastlocation only
	Stream       *StreamResources             // the stream it reads
}

// consumerDeps are the stack's resources a consumer uses.
type consumerDeps struct {
	cfg         *config.Config
	stream      *StreamResources
	ops         *OpsResources
	checkpoints awsdynamodb.Table
	locations   awsdynamodb.Table // lastlocation only
	failed      awss3.Bucket      // the S3 on-failure destination; nil with the queue
}

// newLocationsTable creates lastlocation's table: last known location per user.
//
// Encryption: AWS managed key (aws/dynamodb). The table is reachable only through IAM, and the
// only principal allowed in is lastlocation's role with GetItem/UpdateItem on this table; a
// customer managed key would add key-policy upkeep and four KMS actions to that role without
// narrowing who can read the data. Use a CMK if your compliance regime requires per-key control.
func newLocationsTable(scope constructs.Construct, cfg *config.Config) awsdynamodb.Table {
	return awsdynamodb.NewTable(scope, jsii.String("LocationsTable"), &awsdynamodb.TableProps{
		PartitionKey: &awsdynamodb.Attribute{Name: jsii.String("user_id"), Type: awsdynamodb.AttributeType_STRING},
		BillingMode:  awsdynamodb.BillingMode_PAY_PER_REQUEST,
		PointInTimeRecoverySpecification: &awsdynamodb.PointInTimeRecoverySpecification{
			PointInTimeRecoveryEnabled: jsii.Bool(true),
		},
		Encryption:         awsdynamodb.TableEncryption_AWS_MANAGED,
		RemovalPolicy:      removalPolicy(cfg),
		DeletionProtection: jsii.Bool(cfg.RemovalPolicy == config.RemovalRetain),
	})
}

// newCheckpointTable creates the table every consumer keeps its progress through an aggregated
// record in: item key "<shardId>/<sequenceNumber>", written only when a batch fails part-way so
// that the retry (on any instance) skips the user records already processed, deleted when the
// aggregate is finished, and expired by DynamoDB through the "ttl" attribute otherwise.
// Encryption: AWS managed key, for the reasons given at newLocationsTable.
func newCheckpointTable(scope constructs.Construct, cfg *config.Config) awsdynamodb.Table {
	return awsdynamodb.NewTable(scope, jsii.String("CheckpointTable"), &awsdynamodb.TableProps{
		PartitionKey:        &awsdynamodb.Attribute{Name: jsii.String("id"), Type: awsdynamodb.AttributeType_STRING},
		BillingMode:         awsdynamodb.BillingMode_PAY_PER_REQUEST,
		TimeToLiveAttribute: jsii.String("ttl"),
		PointInTimeRecoverySpecification: &awsdynamodb.PointInTimeRecoverySpecification{
			PointInTimeRecoveryEnabled: jsii.Bool(true),
		},
		Encryption:         awsdynamodb.TableEncryption_AWS_MANAGED,
		RemovalPolicy:      removalPolicy(cfg),
		DeletionProtection: jsii.Bool(cfg.RemovalPolicy == config.RemovalRetain),
	})
}

// newQueue creates a KMS-encrypted, SSL-only queue that keeps messages as long as SQS can.
func newQueue(scope constructs.Construct, id string, d consumerDeps, nagReason string) awssqs.Queue {
	q := awssqs.NewQueue(scope, jsii.String(id), &awssqs.QueueProps{
		Encryption:          awssqs.QueueEncryption_KMS,
		EncryptionMasterKey: d.ops.Key,
		EnforceSSL:          jsii.Bool(true),
		RetentionPeriod:     awscdk.Duration_Days(jsii.Number(14)),
		RemovalPolicy:       removalPolicy(d.cfg),
	})
	cdknag.NagSuppressions_AddResourceSuppressions(q, &[]*cdknag.NagPackSuppression{{
		Id:     jsii.String("AwsSolutions-SQS3"),
		Reason: jsii.String(nagReason),
	}}, jsii.Bool(false))
	return q
}

func newConsumer(scope constructs.Construct, cc config.ConsumerConfig, codeDir string, d consumerDeps) *Consumer {
	cfg, st := d.cfg, d.stream
	id := func(s string) *string { return jsii.String(consumerID(cc.Name) + s) }
	fnName := cfg.FunctionName(cc.Name)
	c := &Consumer{Config: cc, FunctionName: fnName, Table: d.locations, Stream: st}

	c.LogGroup = awslogs.NewLogGroup(scope, id("Logs"), &awslogs.LogGroupProps{
		Retention:     retentionDays(cfg.LogRetentionDays),
		RemovalPolicy: removalPolicy(cfg),
	})

	// On-failure destination: with the queue, Lambda sends a record of each batch it gives up on
	// (shard, sequence numbers) here, not the data itself: the records are re-read from the stream
	// within its retention. With the S3 destination the whole batch goes to the shared bucket.
	var onFailure *string
	if d.failed == nil {
		c.DLQ = newQueue(scope, consumerID(cc.Name)+"Dlq", d, fmt.Sprintf("This queue is itself the dead-letter queue of %s: the on-failure destination of its Kinesis event "+
			"source mapping (cdk-nag only recognises SQS redrive and Lambda async DLQs). Nothing consumes it automatically; "+
			"its messages are alarmed on and replayed by an operator.", fnName))
		onFailure = c.DLQ.QueueArn()
	} else {
		onFailure = d.failed.BucketArn()
	}
	c.DeadLetters = newQueue(scope, consumerID(cc.Name)+"DeadLetters", d, fmt.Sprintf("This queue is itself a dead-letter queue: %s sends each user record it cannot "+
		"ever process (a permanent error such as an unparseable payload) here, with its shard, sequence numbers and the reason, "+
		"and goes on with the rest of the aggregate. Nothing consumes it automatically; its messages are alarmed on and "+
		"inspected or replayed by an operator.", fnName))

	var sourceArn *string
	if cc.EnhancedFanOut {
		c.FanOut = awskinesis.NewCfnStreamConsumer(scope, id("FanOut"), &awskinesis.CfnStreamConsumerProps{
			ConsumerName: jsii.String(fnName),
			StreamArn:    st.Stream.StreamArn(),
		})
		sourceArn = c.FanOut.AttrConsumerArn()
	} else {
		sourceArn = st.Stream.StreamArn()
	}

	c.Role = awsiam.NewRole(scope, id("Role"), &awsiam.RoleProps{
		Description: jsii.String(fmt.Sprintf("nsqk consumer %s: read the stream, keep checkpoints, write its logs and queues", fnName)),
		AssumedBy:   awsiam.NewServicePrincipal(jsii.String("lambda.amazonaws.com"), nil),
	})
	statements := []awsiam.PolicyStatement{
		statement("WriteOwnLogs", ConsumerLogActions, c.LogGroup.LogGroupArn()),
		statement("ReadTheStream", ConsumerStreamReadActions, st.Stream.StreamArn()),
		statement("DecryptRecords", []string{"kms:Decrypt"}, st.Key.KeyArn()),
		statement("KeepCheckpoints", CheckpointTableActions, d.checkpoints.TableArn()),
		statement("SendPermanentlyFailedRecordsToTheDeadLetterQueue", []string{"sqs:SendMessage"}, c.DeadLetters.QueueArn()),
		statement("EncryptQueueMessages", ConsumerDLQKeyActions, d.ops.Key.KeyArn()),
	}
	if c.DLQ != nil {
		statements = append(statements, statement("SendFailedBatchesToTheDlq", []string{"sqs:SendMessage"}, c.DLQ.QueueArn()))
	} else {
		statements = append(statements,
			awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
				Sid:       jsii.String("StoreFailedBatchesInTheBucket"),
				Actions:   jsii.Strings(FailedBatchBucketActions...),
				Resources: &[]*string{d.failed.BucketArn(), d.failed.ArnForObjects(jsii.String("*"))},
			}),
			statement("EncryptFailedBatches", []string{"kms:GenerateDataKey"}, st.Key.KeyArn()))
	}
	if c.FanOut != nil {
		statements = append(statements, statement("ReadThroughTheFanOutConsumer", ConsumerFanOutActions, c.FanOut.AttrConsumerArn()))
	}
	env := map[string]*string{
		EnvCheckpointTable:      d.checkpoints.TableName(),
		EnvDeadLetterQueue:      c.DeadLetters.QueueUrl(),
		EnvStreamRetentionHours: jsii.String(strconv.Itoa(st.Config.RetentionHours)),
	}
	if d.locations != nil {
		statements = append(statements, statement("ReadAndUpdateLocations", LocationsTableActions, d.locations.TableArn()))
		env[EnvLocationsTable] = d.locations.TableName()
	}
	c.Policy = awsiam.NewPolicy(scope, id("Policy"), &awsiam.PolicyProps{
		Roles:      &[]awsiam.IRole{c.Role},
		Statements: &statements,
	})
	if c.DLQ == nil {
		cdknag.NagSuppressions_AddResourceSuppressions(c.Policy, &[]*cdknag.NagPackSuppression{{
			Id:        jsii.String("AwsSolutions-IAM5"),
			AppliesTo: &[]interface{}{&cdknag.RegexAppliesTo{Regex: jsii.String(`/^Resource::<FailedBatches[A-Za-z0-9]+\.Arn>\/\*$/`)}},
			Reason: jsii.String("Lambda's event source mapping chooses the key of each failed-batch object itself, so s3:PutObject " +
				"is granted on the objects of that one bucket; the role can neither read nor delete them."),
		}}, jsii.Bool(false))
	}

	c.Function = awslambda.NewFunction(scope, id("Function"), &awslambda.FunctionProps{
		FunctionName: jsii.String(fnName),
		Description:  jsii.String(fmt.Sprintf("nsqk %s consumer of stream %s", cc.Name, st.Config.Name)),
		Runtime:      awslambda.Runtime_PROVIDED_AL2023(),
		Architecture: awslambda.Architecture_ARM_64(),
		Handler:      jsii.String("bootstrap"),
		Code:         awslambda.Code_FromAsset(jsii.String(codeDir), nil),
		MemorySize:   jsii.Number(float64(cc.MemoryMiB)),
		Timeout:      awscdk.Duration_Seconds(jsii.Number(cc.Timeout.Seconds())),
		Role:         c.Role,
		LogGroup:     c.LogGroup,
		Environment:  &env,
	})
	c.Function.Node().AddDependency(c.Policy)

	mp := &awslambda.CfnEventSourceMappingProps{
		FunctionName:                   c.Function.FunctionName(),
		EventSourceArn:                 sourceArn,
		Enabled:                        jsii.Bool(cc.Enabled),
		StartingPosition:               jsii.String(cc.StartingPosition),
		BatchSize:                      jsii.Number(float64(cc.BatchSize)),
		MaximumBatchingWindowInSeconds: jsii.Number(cc.BatchingWindow.Seconds()),
		ParallelizationFactor:          jsii.Number(float64(cc.ParallelizationFactor)),
		MaximumRetryAttempts:           jsii.Number(float64(cc.RetryAttempts)),
		MaximumRecordAgeInSeconds:      jsii.Number(cc.MaxRecordAge.Seconds()),
		BisectBatchOnFunctionError:     jsii.Bool(true),
		FunctionResponseTypes:          jsii.Strings("ReportBatchItemFailures"),
		DestinationConfig: &awslambda.CfnEventSourceMapping_DestinationConfigProperty{
			OnFailure: &awslambda.CfnEventSourceMapping_OnFailureProperty{Destination: onFailure},
		},
	}
	if cc.StartingPosition == config.StartAtTimestamp {
		mp.StartingPositionTimestamp = jsii.Number(float64(cc.StartingTimestamp.Unix()))
	}
	c.Mapping = awslambda.NewCfnEventSourceMapping(scope, id("Mapping"), mp)
	// Lambda validates the role's permissions when it creates the mapping: the policy must exist first.
	c.Mapping.Node().AddDependency(c.Policy)
	return c
}

func statement(sid string, actions []string, resource *string) awsiam.PolicyStatement {
	return awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:       jsii.String(sid),
		Actions:   jsii.Strings(actions...),
		Resources: &[]*string{resource},
	})
}

// consumerID is the construct id prefix of a consumer: "monitor" -> "Monitor", "lastlocation" ->
// "LastLocation" (kept as they are so that existing stacks update in place), "geofence" -> "Geofence".
func consumerID(name string) string {
	if name == config.ConsumerLastLocation {
		return "LastLocation"
	}
	return strings.ToUpper(name[:1]) + name[1:]
}
