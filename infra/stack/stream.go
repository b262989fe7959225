package stack

import (
	"fmt"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskinesis"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssns"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssnssubscriptions"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/nsqk/nsqk/infra/config"
)

// StreamResources is the Kinesis data stream and the customer managed key that encrypts it.
type StreamResources struct {
	Key    awskms.Key
	Stream awskinesis.Stream
}

func newStreamResources(scope constructs.Construct, cfg *config.Config) *StreamResources {
	rp := removalPolicy(cfg)
	key := awskms.NewKey(scope, jsii.String("StreamKey"), &awskms.KeyProps{
		Description:       jsii.String(fmt.Sprintf("nsqk %s: server-side encryption of Kinesis stream %s", cfg.StackName, cfg.Stream.Name)),
		Alias:             jsii.String(fmt.Sprintf("alias/%s/stream", cfg.StackName)),
		EnableKeyRotation: jsii.Bool(true),
		RemovalPolicy:     rp,
		PendingWindow:     awscdk.Duration_Days(jsii.Number(30)),
	})

	props := &awskinesis.StreamProps{
		StreamName:      jsii.String(cfg.Stream.Name),
		RetentionPeriod: awscdk.Duration_Hours(jsii.Number(float64(cfg.Stream.RetentionHours))),
		Encryption:      awskinesis.StreamEncryption_KMS,
		EncryptionKey:   key,
		RemovalPolicy:   rp,
	}
	if cfg.Stream.Mode == config.StreamModeOnDemand {
		props.StreamMode = awskinesis.StreamMode_ON_DEMAND
	} else {
		props.StreamMode = awskinesis.StreamMode_PROVISIONED
		props.ShardCount = jsii.Number(float64(cfg.Stream.ShardCount))
	}
	stream := awskinesis.NewStream(scope, jsii.String("Stream"), props)
	cdknag.NagSuppressions_AddResourceSuppressions(stream, &[]*cdknag.NagPackSuppression{{
		Id: jsii.String("AwsSolutions-KDS3"),
		Reason: jsii.String("The stream is encrypted with a customer managed key with rotation instead of aws/kinesis: its key policy is ours " +
			"(the bridge gets only kms:GenerateDataKey, the consumers only kms:Decrypt), its use is auditable per principal in " +
			"CloudTrail, and disabling it crypto-shreds the retained records. The extra KMS request cost is accepted."),
	}}, jsii.Bool(false))
	return &StreamResources{Key: key, Stream: stream}
}

// OpsResources are the operational plumbing shared by all alarms and DLQs: a customer managed key
// (SNS and SQS encryption; CloudWatch alarms cannot publish to a topic encrypted with aws/sns)
// and the alarm topic.
type OpsResources struct {
	Key   awskms.Key
	Topic awssns.Topic
}

func newOpsResources(scope constructs.Construct, cfg *config.Config) *OpsResources {
	key := awskms.NewKey(scope, jsii.String("OpsKey"), &awskms.KeyProps{
		Description:       jsii.String(fmt.Sprintf("nsqk %s: encryption of the alarm topic and the consumers' queues", cfg.StackName)),
		Alias:             jsii.String(fmt.Sprintf("alias/%s/ops", cfg.StackName)),
		EnableKeyRotation: jsii.Bool(true),
		RemovalPolicy:     removalPolicy(cfg),
		PendingWindow:     awscdk.Duration_Days(jsii.Number(30)),
	})
	// CloudWatch publishes alarm notifications to the encrypted topic: it needs the data key.
	key.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("AllowCloudWatchAlarmsToUseTheKeyForTheAlarmTopic"),
		Principals: &[]awsiam.IPrincipal{awsiam.NewServicePrincipal(jsii.String("cloudwatch.amazonaws.com"), nil)},
		Actions:    jsii.Strings("kms:Decrypt", "kms:GenerateDataKey*"),
		Resources:  jsii.Strings("*"),
		Conditions: &map[string]any{
			"StringEquals": map[string]any{"aws:SourceAccount": awscdk.Aws_ACCOUNT_ID()},
		},
	}), jsii.Bool(false))

	topic := awssns.NewTopic(scope, jsii.String("AlarmTopic"), &awssns.TopicProps{
		DisplayName: jsii.String(fmt.Sprintf("nsqk %s alarms", cfg.StackName)),
		MasterKey:   key,
		EnforceSSL:  jsii.Bool(true),
	})
	topic.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("AllowCloudWatchAlarmsToPublish"),
		Principals: &[]awsiam.IPrincipal{awsiam.NewServicePrincipal(jsii.String("cloudwatch.amazonaws.com"), nil)},
		Actions:    jsii.Strings("sns:Publish"),
		Resources:  &[]*string{topic.TopicArn()},
		Conditions: &map[string]any{
			"StringEquals": map[string]any{"aws:SourceAccount": awscdk.Aws_ACCOUNT_ID()},
		},
	}))
	for _, e := range cfg.AlarmEmails {
		topic.AddSubscription(awssnssubscriptions.NewEmailSubscription(jsii.String(e), nil))
	}
	return &OpsResources{Key: key, Topic: topic}
}
