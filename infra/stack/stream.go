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

// StreamResources is a Kinesis data stream and the customer managed key that encrypts it. With
// routes every route has a stream of its own; they share the key.
type StreamResources struct {
	Key    awskms.Key
	Stream awskinesis.Stream
	Config config.StreamConfig
	Route  *config.Route // nil without routes
}

// newStreams creates the stream (without routes) or one stream per route, in route order.
func newStreams(scope constructs.Construct, cfg *config.Config) []*StreamResources {
	what := "Kinesis stream " + cfg.Stream.Name
	if len(cfg.Routes) > 0 {
		what = "the Kinesis streams of the routes"
	}
	key := awskms.NewKey(scope, jsii.String("StreamKey"), &awskms.KeyProps{
		Description:       jsii.String(fmt.Sprintf("nsqk %s: server-side encryption of %s", cfg.StackName, what)),
		Alias:             jsii.String(fmt.Sprintf("alias/%s/stream", cfg.StackName)),
		EnableKeyRotation: jsii.Bool(true),
		RemovalPolicy:     removalPolicy(cfg),
		PendingWindow:     awscdk.Duration_Days(jsii.Number(30)),
	})
	if len(cfg.Routes) == 0 {
		return []*StreamResources{{Key: key, Stream: newStream(scope, cfg, "Stream", cfg.Stream, key), Config: cfg.Stream}}
	}
	var out []*StreamResources
	for i := range cfg.Routes {
		r := &cfg.Routes[i]
		// The construct id follows the route's name, not its place in the list: reordering the
		// routes must not replace (and so empty) a stream.
		out = append(out, &StreamResources{Key: key, Stream: newStream(scope, cfg, "Route"+r.ID+"Stream", r.Stream, key), Config: r.Stream, Route: r})
	}
	return out
}

func newStream(scope constructs.Construct, cfg *config.Config, id string, sc config.StreamConfig, key awskms.Key) awskinesis.Stream {
	rp := removalPolicy(cfg)
	props := &awskinesis.StreamProps{
		StreamName:      jsii.String(sc.Name),
		RetentionPeriod: awscdk.Duration_Hours(jsii.Number(float64(sc.RetentionHours))),
		Encryption:      awskinesis.StreamEncryption_KMS,
		EncryptionKey:   key,
		RemovalPolicy:   rp,
	}
	if sc.Mode == config.StreamModeOnDemand {
		props.StreamMode = awskinesis.StreamMode_ON_DEMAND
	} else {
		props.StreamMode = awskinesis.StreamMode_PROVISIONED
		props.ShardCount = jsii.Number(float64(sc.ShardCount))
	}
	stream := awskinesis.NewStream(scope, jsii.String(id), props)
	cdknag.NagSuppressions_AddResourceSuppressions(stream, &[]*cdknag.NagPackSuppression{{
		Id: jsii.String("AwsSolutions-KDS3"),
		Reason: jsii.String("The stream is encrypted with a customer managed key with rotation instead of aws/kinesis: its key policy is ours " +
			"(the bridge gets only kms:GenerateDataKey, the consumers only kms:Decrypt), its use is auditable per principal in " +
			"CloudTrail, and disabling it crypto-shreds the retained records. The extra KMS request cost is accepted."),
	}}, jsii.Bool(false))
	return stream
}

// streamArns are the ARNs of every stream the bridge writes.
func streamArns(streams []*StreamResources) []*string {
	var out []*string
	for _, s := range streams {
		out = append(out, s.Stream.StreamArn())
	}
	return out
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
