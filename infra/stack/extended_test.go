package stack

// The "extended" variant: what cdk.json's context becomes with a team's own consumer added by
// context alone, whole failed batches kept in S3, and the archive on.

import (
	"sort"
	"strings"
	"testing"

	"github.com/nsqk/nsqk/infra/config"
)

func extendedVariant(t *testing.T) *variant {
	return synthVariant(t, "extended", map[string]any{
		config.KeyConsumers: map[string]any{
			"geofence": map[string]any{"batchSize": 250, "parallelizationFactor": 2, "memoryMiB": 512, "startingPosition": "LATEST"},
		},
		config.KeyOnFailure:           "s3",
		config.KeyOnFailureExpiryDays: 30,
		config.KeyArchive:             true,
		config.KeyArchiveExpiryDays:   400,
		config.KeyRetentionHours:      48,
	})
}

func TestExtendedStack(t *testing.T) {
	v := extendedVariant(t)
	streamID, _ := v.one(t, "AWS::Kinesis::Stream")
	streamKey, _ := v.byPath(t, "StreamKey/Resource")
	bucketID, bucket := v.byPath(t, "FailedBatches/Resource")

	t.Run("OwnConsumerAddedByContextAlone", func(t *testing.T) {
		wantEq(t, "consumers", v.cfg.ConsumerNames(), []string{"monitor", "lastlocation", "geofence"})
		_, fn := v.byPath(t, "GeofenceFunction/Resource")
		p := props(fn)
		wantEq(t, "function name", p["FunctionName"], "nsqk-geofence")
		wantEq(t, "memory", p["MemorySize"], 512)
		wantEq(t, "runtime", p["Runtime"], "provided.al2023")
		fnID, _ := v.byPath(t, "GeofenceFunction/Resource")
		_, m := v.byPath(t, "GeofenceMapping")
		mp := props(m)
		wantEq(t, "mapping function", mp["FunctionName"], map[string]any{"Ref": fnID})
		wantEq(t, "mapping source", mp["EventSourceArn"], map[string]any{"Fn::GetAtt": []any{streamID, "Arn"}})
		wantEq(t, "batch size", mp["BatchSize"], 250)
		wantEq(t, "parallelization", mp["ParallelizationFactor"], 2)
		wantEq(t, "starting position", mp["StartingPosition"], "LATEST")
		wantEq(t, "retries (generic default)", mp["MaximumRetryAttempts"], 5)
		wantEq(t, "bisect", mp["BisectBatchOnFunctionError"], true)
		wantEq(t, "item failures", mp["FunctionResponseTypes"], []any{"ReportBatchItemFailures"})

		// The same role shape as the built-in ones, without lastlocation's table.
		roleID, _ := v.byPath(t, "GeofenceRole/Resource")
		logsID, _ := v.byPath(t, "GeofenceLogs/Resource")
		deadID, _ := v.byPath(t, "GeofenceDeadLetters/Resource")
		checkpointsID, _ := v.byPath(t, "CheckpointTable/Resource")
		opsKey, _ := v.byPath(t, "OpsKey/Resource")
		objects := `{"Fn::Join":["",[{"Fn::GetAtt":["` + bucketID + `","Arn"]},"/*"]]}`
		equalStrings(t, "geofence role", v.grants(t, roleID), sortedConcat(
			pairs(logsID+".Arn", "logs:CreateLogStream", "logs:PutLogEvents"),
			pairs(streamID+".Arn", "kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:ListShards"),
			pairs(streamKey+".Arn", "kms:Decrypt", "kms:GenerateDataKey"),
			pairs(checkpointsID+".Arn", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:UpdateItem"),
			pairs(deadID+".Arn", "sqs:SendMessage"),
			pairs(opsKey+".Arn", "kms:Decrypt", "kms:GenerateDataKey"),
			pairs(bucketID+".Arn", "s3:ListBucket", "s3:PutObject"),
			pairs(objects, "s3:ListBucket", "s3:PutObject"),
		))
		wantEq(t, "environment", get(p, "Environment", "Variables"), map[string]any{
			"NSQK_CHECKPOINT_TABLE":       map[string]any{"Ref": checkpointsID},
			"NSQK_DEAD_LETTER_QUEUE_URL":  map[string]any{"Ref": deadID},
			"NSQK_STREAM_RETENTION_HOURS": "48",
		})

		_, d := v.one(t, "AWS::CloudWatch::Dashboard")
		body := ref(props(d)["DashboardBody"])
		for _, w := range []string{"nsqk-geofence", "geofence dead letters", "geofence dead-lettered records", "geofence IteratorAge"} {
			if !strings.Contains(body, w) {
				t.Errorf("dashboard does not show %s", w)
			}
		}
		var outputs []string
		for k := range v.json["Outputs"].(map[string]any) {
			if strings.HasPrefix(k, "Geofence") {
				outputs = append(outputs, k)
			}
		}
		sort.Strings(outputs)
		wantEq(t, "outputs", outputs, []string{"GeofenceDeadLettersUrl", "GeofenceFunctionName", "GeofenceLogGroup"})
	})

	t.Run("FailedBatchesGoToS3", func(t *testing.T) {
		p := props(bucket)
		wantEq(t, "kms", get(p, "BucketEncryption", "ServerSideEncryptionConfiguration", 0), map[string]any{
			"BucketKeyEnabled": true,
			"ServerSideEncryptionByDefault": map[string]any{
				"KMSMasterKeyID": map[string]any{"Fn::GetAtt": []any{streamKey, "Arn"}}, "SSEAlgorithm": "aws:kms",
			},
		})
		wantEq(t, "public access", p["PublicAccessBlockConfiguration"], map[string]any{
			"BlockPublicAcls": true, "BlockPublicPolicy": true, "IgnorePublicAcls": true, "RestrictPublicBuckets": true,
		})
		wantEq(t, "lifecycle", get(p, "LifecycleConfiguration", "Rules"), []any{map[string]any{
			"Id": "Expire", "Status": "Enabled", "ExpirationInDays": 30,
			"AbortIncompleteMultipartUpload": map[string]any{"DaysAfterInitiation": 7},
		}})
		wantEq(t, "request metrics", p["MetricsConfigurations"], []any{map[string]any{"Id": "FailedBatches"}})
		wantEq(t, "retained", bucket["DeletionPolicy"], "Retain")
		checkSSLOnly(t, v, bucketID)

		for _, name := range v.cfg.ConsumerNames() {
			_, m := v.byPath(t, consumerID(name)+"Mapping")
			wantEq(t, name+" on-failure destination", get(props(m), "DestinationConfig", "OnFailure", "Destination"),
				map[string]any{"Fn::GetAtt": []any{bucketID, "Arn"}})
		}
		// No on-failure queues: the dead-letter queues of user records are the only queues.
		wantEq(t, "queues", len(v.resources("AWS::SQS::Queue")), 3)
		checkAlarms(t, v, config.DefaultAlarmThresholds())
	})

	t.Run("Archive", func(t *testing.T) {
		archiveID, archive := v.byPath(t, "ArchiveBucket/Resource")
		wantEq(t, "archive lifecycle", get(props(archive), "LifecycleConfiguration", "Rules", 0, "ExpirationInDays"), 400)
		wantEq(t, "archive kms", get(props(archive), "BucketEncryption", "ServerSideEncryptionConfiguration", 0, "ServerSideEncryptionByDefault", "SSEAlgorithm"), "aws:kms")
		checkSSLOnly(t, v, archiveID)
		roleID, role := v.byPath(t, "ArchiveRole/Resource")
		wantEq(t, "trust", get(props(role), "AssumeRolePolicyDocument", "Statement", 0, "Principal"), map[string]any{"Service": "firehose.amazonaws.com"})
		logsID, _ := v.byPath(t, "ArchiveLogs/Resource")
		_, deliveryRes := v.one(t, "AWS::KinesisFirehose::DeliveryStream")
		d := props(deliveryRes)
		wantEq(t, "type", d["DeliveryStreamType"], "KinesisStreamAsSource")
		wantEq(t, "name", d["DeliveryStreamName"], "nsqk-archive")
		wantEq(t, "source", d["KinesisStreamSourceConfiguration"], map[string]any{
			"KinesisStreamARN": map[string]any{"Fn::GetAtt": []any{streamID, "Arn"}},
			"RoleARN":          map[string]any{"Fn::GetAtt": []any{roleID, "Arn"}},
		})
		s3 := get(d, "ExtendedS3DestinationConfiguration")
		wantEq(t, "bucket", get(s3, "BucketARN"), map[string]any{"Fn::GetAtt": []any{archiveID, "Arn"}})
		wantEq(t, "partitioned by day", get(s3, "Prefix"), "records/!{timestamp:yyyy/MM/dd}/")
		wantEq(t, "error prefix", get(s3, "ErrorOutputPrefix"), "errors/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd}/")
		wantEq(t, "kms", get(s3, "EncryptionConfiguration"), map[string]any{"KMSEncryptionConfig": map[string]any{"AWSKMSKeyARN": map[string]any{"Fn::GetAtt": []any{streamKey, "Arn"}}}})
		wantEq(t, "one record per line", get(s3, "ProcessingConfiguration"), map[string]any{"Enabled": true, "Processors": []any{map[string]any{"Type": "AppendDelimiterToRecord"}}})
		wantEq(t, "error logs", get(s3, "CloudWatchLoggingOptions", "LogGroupName"), map[string]any{"Ref": logsID})

		got := v.grants(t, roleID)
		objects := `{"Fn::Join":["",[{"Fn::GetAtt":["` + archiveID + `","Arn"]},"/*"]]}`
		var withoutLogs []string
		for _, g := range got {
			if !strings.HasPrefix(g, "logs:") {
				withoutLogs = append(withoutLogs, g)
			}
		}
		s3Actions := []string{"s3:AbortMultipartUpload", "s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:PutObject"}
		equalStrings(t, "archive role", withoutLogs, sortedConcat(
			pairs(streamID+".Arn", "kinesis:DescribeStream", "kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:ListShards"),
			pairs(streamKey+".Arn", "kms:Decrypt", "kms:GenerateDataKey"),
			pairs(archiveID+".Arn", s3Actions...),
			pairs(objects, s3Actions...),
		))
		var logGrants []string
		for _, g := range got {
			if strings.HasPrefix(g, "logs:") {
				logGrants = append(logGrants, g)
			}
		}
		logStreamID, logStream := v.byPath(t, "ArchiveLogStream/Resource")
		wantEq(t, "log stream", props(logStream)["LogStreamName"], "S3Delivery")
		if len(logGrants) != 1 || !strings.HasPrefix(logGrants[0], "logs:PutLogEvents @ ") ||
			!strings.Contains(logGrants[0], `{"Ref":"`+logsID+`"},":log-stream:",{"Ref":"`+logStreamID+`"}`) {
			t.Errorf("archive log grants: want PutLogEvents on its own log stream only, got %v", logGrants)
		}
	})

	t.Run("NagClean", func(t *testing.T) { checkNagClean(t, v) })

	t.Run("NagSuppressionsAreSpecific", func(t *testing.T) {
		objects := func(bucket string) string {
			return `regex:/^Resource::<` + bucket + `[A-Za-z0-9]+\.Arn>\/\*$/`
		}
		wantEq(t, "suppressions", suppressions(t, v), []string{
			"nsqk/ArchiveBucket/Resource AwsSolutions-S1 ",
			"nsqk/ArchiveDelivery AwsSolutions-KDF1 ",
			"nsqk/ArchivePolicy/Resource AwsSolutions-IAM5 " + objects("ArchiveBucket"),
			"nsqk/BridgeTask/ExecutionRole/DefaultPolicy/Resource AwsSolutions-IAM5 Resource::*",
			"nsqk/BridgeTask/ExecutionRole/Resource AwsSolutions-IAM5 Resource::*",
			"nsqk/BridgeTask/Resource AwsSolutions-ECS2 ",
			"nsqk/FailedBatches/Resource AwsSolutions-S1 ",
			"nsqk/GeofenceDeadLetters/Resource AwsSolutions-SQS3 ",
			"nsqk/GeofencePolicy/Resource AwsSolutions-IAM5 " + objects("FailedBatches"),
			"nsqk/LastLocationDeadLetters/Resource AwsSolutions-SQS3 ",
			"nsqk/LastLocationPolicy/Resource AwsSolutions-IAM5 " + objects("FailedBatches"),
			"nsqk/MonitorDeadLetters/Resource AwsSolutions-SQS3 ",
			"nsqk/MonitorPolicy/Resource AwsSolutions-IAM5 " + objects("FailedBatches"),
			"nsqk/Stream/Resource AwsSolutions-KDS3 ",
		})
	})
}

// TestDefaultStackHasNoArchive: the archive and the S3 destination are off unless asked for.
func TestDefaultStackHasNoArchive(t *testing.T) {
	v := defaultVariant(t)
	for _, typ := range []string{"AWS::KinesisFirehose::DeliveryStream", "AWS::S3::Bucket"} {
		if n := len(v.resources(typ)); n != 0 {
			t.Errorf("%d %s in the default stack", n, typ)
		}
	}
}

// checkSSLOnly: the bucket's policy denies every request without TLS.
func checkSSLOnly(t *testing.T, v *variant, bucketID string) {
	t.Helper()
	for _, pol := range v.resources("AWS::S3::BucketPolicy") {
		if ref(props(pol)["Bucket"]) != "Ref:"+bucketID {
			continue
		}
		for _, st := range asList(get(props(pol), "PolicyDocument", "Statement")) {
			if get(st, "Effect") == "Deny" && get(st, "Condition", "Bool", "aws:SecureTransport") == "false" && get(st, "Action") == "s3:*" {
				return
			}
		}
	}
	t.Errorf("bucket %s has no SSL-only policy", bucketID)
}
