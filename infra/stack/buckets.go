package stack

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/nsqk/nsqk/infra/config"
)

// failedBatchesMetricsID names the bucket's request-metrics filter (the whole bucket).
const failedBatchesMetricsID = "FailedBatches"

// newDataBucket creates a bucket for record data: encrypted with the stream's key (disabling the
// key makes the copies as unreadable as the stream), public access blocked, SSL only, objects
// owned by the bucket owner, unfinished uploads cleaned up, and objects expired after expiryDays
// (0 = kept). Server access logs are not written: the only writers are the stack's own service
// roles, and object-level reads are audited with CloudTrail data events where required.
func newDataBucket(scope constructs.Construct, id string, cfg *config.Config, key awskms.IKey, expiryDays int, metrics []*awss3.BucketMetrics, purpose string) awss3.Bucket {
	rule := &awss3.LifecycleRule{
		Id:                                  jsii.String("Expire"),
		AbortIncompleteMultipartUploadAfter: awscdk.Duration_Days(jsii.Number(7)),
	}
	if expiryDays > 0 {
		rule.Expiration = awscdk.Duration_Days(jsii.Number(float64(expiryDays)))
	}
	props := &awss3.BucketProps{
		Encryption:        awss3.BucketEncryption_KMS,
		EncryptionKey:     key,
		BucketKeyEnabled:  jsii.Bool(true),
		BlockPublicAccess: awss3.BlockPublicAccess_BLOCK_ALL(),
		EnforceSSL:        jsii.Bool(true),
		ObjectOwnership:   awss3.ObjectOwnership_BUCKET_OWNER_ENFORCED,
		LifecycleRules:    &[]*awss3.LifecycleRule{rule},
		RemovalPolicy:     removalPolicy(cfg),
	}
	if len(metrics) > 0 {
		props.Metrics = &metrics
	}
	b := awss3.NewBucket(scope, jsii.String(id), props)
	cdknag.NagSuppressions_AddResourceSuppressions(b, &[]*cdknag.NagPackSuppression{{
		Id: jsii.String("AwsSolutions-S1"),
		Reason: jsii.String("This bucket holds " + purpose + ". Its only writer is one service role of this stack with " +
			"exactly the actions it needs; reads are an operator's, audited with CloudTrail data events where required. " +
			"A server access log bucket would add a second bucket of logs about these few writes."),
	}}, jsii.Bool(false))
	return b
}

// newFailedBatchesBucket is the S3 on-failure destination shared by the consumers' mappings:
// Lambda stores the whole invocation record there, one object per failed batch.
func newFailedBatchesBucket(scope constructs.Construct, cfg *config.Config, st *StreamResources) awss3.Bucket {
	return newDataBucket(scope, "FailedBatches", cfg, st.Key, cfg.OnFailure.ExpiryDays,
		[]*awss3.BucketMetrics{{Id: jsii.String(failedBatchesMetricsID)}},
		"the batches the consumers' event source mappings gave up on, records included")
}
