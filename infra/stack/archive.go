package stack

import (
	"fmt"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskinesisfirehose"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/nsqk/nsqk/infra/config"
)

// Exact action lists of the archive's delivery role.
var (
	// ArchiveStreamActions is what Firehose needs to read a Kinesis stream source.
	ArchiveStreamActions = []string{"kinesis:DescribeStream", "kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:ListShards"}
	// ArchiveBucketActions is what Firehose needs to deliver to an S3 bucket.
	ArchiveBucketActions = []string{
		"s3:AbortMultipartUpload", "s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket",
		"s3:ListBucketMultipartUploads", "s3:PutObject",
	}
)

// ArchivePrefix is where the archived user records go: one folder per UTC day of arrival in the
// stream, one newline-delimited, gzip-compressed object per buffer flush.
const (
	ArchivePrefix      = "records/!{timestamp:yyyy/MM/dd}/"
	ArchiveErrorPrefix = "errors/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd}/"
)

// Archive is the optional copy of the stream in S3: an Amazon Data Firehose delivery stream reading
// the Kinesis stream (it de-aggregates the bridge's aggregated records itself, so the objects hold
// the user records as published to NSQ) into a date-partitioned bucket.
type Archive struct {
	Bucket   awss3.Bucket
	Role     awsiam.Role
	Delivery awskinesisfirehose.CfnDeliveryStream
	LogGroup awslogs.LogGroup
}

func newArchive(scope constructs.Construct, cfg *config.Config, st *StreamResources) *Archive {
	a := &Archive{}
	a.Bucket = newDataBucket(scope, "ArchiveBucket", cfg, st.Key, cfg.Archive.ExpiryDays, nil,
		"the archive of every user record of the stream, written by the archive's Firehose delivery stream")
	a.LogGroup = awslogs.NewLogGroup(scope, jsii.String("ArchiveLogs"), &awslogs.LogGroupProps{
		Retention:     retentionDays(cfg.LogRetentionDays),
		RemovalPolicy: removalPolicy(cfg),
	})
	logStream := awslogs.NewLogStream(scope, jsii.String("ArchiveLogStream"), &awslogs.LogStreamProps{
		LogGroup:      a.LogGroup,
		LogStreamName: jsii.String("S3Delivery"),
		RemovalPolicy: removalPolicy(cfg),
	})
	a.Role = awsiam.NewRole(scope, jsii.String("ArchiveRole"), &awsiam.RoleProps{
		Description: jsii.String(fmt.Sprintf("nsqk %s archive: read the stream, write the archive bucket", cfg.StackName)),
		AssumedBy: awsiam.NewServicePrincipal(jsii.String("firehose.amazonaws.com"), &awsiam.ServicePrincipalOpts{
			Conditions: &map[string]any{"StringEquals": map[string]any{"aws:SourceAccount": awscdk.Aws_ACCOUNT_ID()}},
		}),
	})
	policy := awsiam.NewPolicy(scope, jsii.String("ArchivePolicy"), &awsiam.PolicyProps{
		Roles: &[]awsiam.IRole{a.Role},
		Statements: &[]awsiam.PolicyStatement{
			statement("ReadTheStream", ArchiveStreamActions, st.Stream.StreamArn()),
			statement("DecryptRecordsAndEncryptTheArchive", []string{"kms:Decrypt", "kms:GenerateDataKey"}, st.Key.KeyArn()),
			awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
				Sid:       jsii.String("WriteTheArchive"),
				Actions:   jsii.Strings(ArchiveBucketActions...),
				Resources: &[]*string{a.Bucket.BucketArn(), a.Bucket.ArnForObjects(jsii.String("*"))},
			}),
			statement("LogDeliveryErrors", []string{"logs:PutLogEvents"}, awscdk.Stack_Of(scope).FormatArn(&awscdk.ArnComponents{
				Service:      jsii.String("logs"),
				Resource:     jsii.String("log-group"),
				ResourceName: jsii.String(*a.LogGroup.LogGroupName() + ":log-stream:" + *logStream.LogStreamName()),
				ArnFormat:    awscdk.ArnFormat_COLON_RESOURCE_NAME,
			})),
		},
	})
	cdknag.NagSuppressions_AddResourceSuppressions(policy, &[]*cdknag.NagPackSuppression{{
		Id:        jsii.String("AwsSolutions-IAM5"),
		AppliesTo: &[]interface{}{&cdknag.RegexAppliesTo{Regex: jsii.String(`/^Resource::<ArchiveBucket[A-Za-z0-9]+\.Arn>\/\*$/`)}},
		Reason: jsii.String("Firehose names each archive object itself (records/<yyyy>/<MM>/<dd>/<delivery stream>-<time>-<uuid>.gz), " +
			"so the delivery role's object actions are granted on the objects of that one bucket."),
	}}, jsii.Bool(false))

	a.Delivery = awskinesisfirehose.NewCfnDeliveryStream(scope, jsii.String("ArchiveDelivery"), &awskinesisfirehose.CfnDeliveryStreamProps{
		DeliveryStreamName: jsii.String(cfg.StackName + "-archive"),
		DeliveryStreamType: jsii.String("KinesisStreamAsSource"),
		KinesisStreamSourceConfiguration: &awskinesisfirehose.CfnDeliveryStream_KinesisStreamSourceConfigurationProperty{
			KinesisStreamArn: st.Stream.StreamArn(),
			RoleArn:          a.Role.RoleArn(),
		},
		ExtendedS3DestinationConfiguration: &awskinesisfirehose.CfnDeliveryStream_ExtendedS3DestinationConfigurationProperty{
			BucketArn:         a.Bucket.BucketArn(),
			RoleArn:           a.Role.RoleArn(),
			Prefix:            jsii.String(ArchivePrefix),
			ErrorOutputPrefix: jsii.String(ArchiveErrorPrefix),
			CompressionFormat: jsii.String("GZIP"),
			BufferingHints: &awskinesisfirehose.CfnDeliveryStream_BufferingHintsProperty{
				IntervalInSeconds: jsii.Number(300),
				SizeInMBs:         jsii.Number(64),
			},
			EncryptionConfiguration: &awskinesisfirehose.CfnDeliveryStream_EncryptionConfigurationProperty{
				KmsEncryptionConfig: &awskinesisfirehose.CfnDeliveryStream_KMSEncryptionConfigProperty{AwskmsKeyArn: st.Key.KeyArn()},
			},
			CloudWatchLoggingOptions: &awskinesisfirehose.CfnDeliveryStream_CloudWatchLoggingOptionsProperty{
				Enabled:       jsii.Bool(true),
				LogGroupName:  a.LogGroup.LogGroupName(),
				LogStreamName: logStream.LogStreamName(),
			},
			// One user record per line: the objects read like the NSQ topic did.
			ProcessingConfiguration: &awskinesisfirehose.CfnDeliveryStream_ProcessingConfigurationProperty{
				Enabled:    jsii.Bool(true),
				Processors: &[]any{&awskinesisfirehose.CfnDeliveryStream_ProcessorProperty{Type: jsii.String("AppendDelimiterToRecord")}},
			},
		},
	})
	// Firehose checks the role when it creates the delivery stream: the policy must exist first.
	a.Delivery.Node().AddDependency(policy)
	cdknag.NagSuppressions_AddResourceSuppressions(a.Delivery, &[]*cdknag.NagPackSuppression{{
		Id: jsii.String("AwsSolutions-KDF1"),
		Reason: jsii.String("The delivery stream's source is the stack's Kinesis stream, already encrypted with its customer managed key; " +
			"Firehose does not offer server-side encryption for a Kinesis stream source, and the archive objects are encrypted " +
			"with the same key in S3."),
	}}, jsii.Bool(false))
	return a
}
