package stack

import (
	"fmt"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsdynamodb"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskinesis"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
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

// Consumer is one Lambda consumer with its mapping, role, DLQ and log group.
type Consumer struct {
	Config       config.ConsumerConfig
	FunctionName string
	Function     awslambda.Function
	Role         awsiam.Role
	Policy       awsiam.Policy
	DLQ          awssqs.Queue
	LogGroup     awslogs.LogGroup
	Mapping      awslambda.CfnEventSourceMapping
	FanOut       awskinesis.CfnStreamConsumer // nil without enhanced fan-out
	Table        awsdynamodb.Table            // lastlocation only
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

func newConsumer(scope constructs.Construct, cfg *config.Config, cc config.ConsumerConfig, codeDir string, st *StreamResources, ops *OpsResources, table awsdynamodb.Table) *Consumer {
	id := func(s string) *string { return jsii.String(consumerID(cc.Name) + s) }
	fnName := cfg.FunctionName(cc.Name)
	rp := removalPolicy(cfg)
	c := &Consumer{Config: cc, FunctionName: fnName, Table: table}

	c.LogGroup = awslogs.NewLogGroup(scope, id("Logs"), &awslogs.LogGroupProps{
		Retention:     retentionDays(cfg.LogRetentionDays),
		RemovalPolicy: rp,
	})

	// On-failure destination: Lambda sends a record of each batch it gives up on (shard, sequence
	// numbers) here, not the data itself: the records are re-read from the stream within its retention.
	c.DLQ = awssqs.NewQueue(scope, id("Dlq"), &awssqs.QueueProps{
		Encryption:          awssqs.QueueEncryption_KMS,
		EncryptionMasterKey: ops.Key,
		EnforceSSL:          jsii.Bool(true),
		RetentionPeriod:     awscdk.Duration_Days(jsii.Number(14)),
		RemovalPolicy:       rp,
	})
	cdknag.NagSuppressions_AddResourceSuppressions(c.DLQ, &[]*cdknag.NagPackSuppression{{
		Id: jsii.String("AwsSolutions-SQS3"),
		Reason: jsii.String(fmt.Sprintf("This queue is itself the dead-letter queue of %s: the on-failure destination of its Kinesis event "+
			"source mapping (cdk-nag only recognises SQS redrive and Lambda async DLQs). Nothing consumes it automatically; "+
			"its messages are alarmed on and replayed by an operator.", fnName)),
	}}, jsii.Bool(false))

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
		Description: jsii.String(fmt.Sprintf("nsqk consumer %s: read the stream, write its logs and DLQ", fnName)),
		AssumedBy:   awsiam.NewServicePrincipal(jsii.String("lambda.amazonaws.com"), nil),
	})
	statements := []awsiam.PolicyStatement{
		statement("WriteOwnLogs", ConsumerLogActions, c.LogGroup.LogGroupArn()),
		statement("ReadTheStream", ConsumerStreamReadActions, st.Stream.StreamArn()),
		statement("DecryptRecords", []string{"kms:Decrypt"}, st.Key.KeyArn()),
		statement("SendFailedBatchesToTheDlq", []string{"sqs:SendMessage"}, c.DLQ.QueueArn()),
		statement("EncryptDlqMessages", ConsumerDLQKeyActions, ops.Key.KeyArn()),
	}
	if c.FanOut != nil {
		statements = append(statements, statement("ReadThroughTheFanOutConsumer", ConsumerFanOutActions, c.FanOut.AttrConsumerArn()))
	}
	env := map[string]*string{}
	if table != nil {
		statements = append(statements, statement("ReadAndUpdateLocations", LocationsTableActions, table.TableArn()))
		env["NSQK_LOCATIONS_TABLE"] = table.TableName()
	}
	c.Policy = awsiam.NewPolicy(scope, id("Policy"), &awsiam.PolicyProps{
		Roles:      &[]awsiam.IRole{c.Role},
		Statements: &statements,
	})

	c.Function = awslambda.NewFunction(scope, id("Function"), &awslambda.FunctionProps{
		FunctionName: jsii.String(fnName),
		Description:  jsii.String(fmt.Sprintf("nsqk %s consumer of stream %s", cc.Name, cfg.Stream.Name)),
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
			OnFailure: &awslambda.CfnEventSourceMapping_OnFailureProperty{Destination: c.DLQ.QueueArn()},
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

// consumerID is the construct id prefix of a consumer: "monitor" -> "Monitor".
func consumerID(name string) string {
	switch name {
	case config.ConsumerLastLocation:
		return "LastLocation"
	case config.ConsumerMonitor:
		return "Monitor"
	}
	return name
}
