package config

// Context keys. Everything the stack reads from CDK context is listed here and documented in the
// deployment guide's context reference (a test keeps the two in step).
const (
	KeyStackName           = "stackName"
	KeyAccount             = "account"
	KeyRegion              = "region"
	KeyStreamName          = "streamName"
	KeyStreamMode          = "streamMode"
	KeyShardCount          = "shardCount"
	KeyRetentionHours      = "retentionHours"
	KeyLookupdHTTP         = "nsqLookupdHttpAddresses"
	KeyNsqdTCP             = "nsqdTcpAddresses"
	KeyNsqdHTTP            = "nsqdHttpAddresses"
	KeyTopic               = "nsqTopic"
	KeyChannel             = "nsqChannel"
	KeyDeadLetterTopic     = "nsqDeadLetterTopic"
	KeyAuthSecretArn       = "nsqAuthSecretArn"
	KeyAuthSecretKmsKeyArn = "nsqAuthSecretKmsKeyArn"
	KeyTLS                 = "nsqTls"
	KeyPartitionKey        = "partitionKey"
	KeyKeyBuckets          = "keyBuckets"
	KeyMaxBufferedTime     = "maxBufferedTime"
	KeyMaxInFlight         = "maxInFlight"
	KeyBridgeLogLevel      = "bridgeLogLevel"
	KeyShutdownTimeout     = "shutdownTimeout"
	KeyBridgeCPU           = "bridgeCpu"
	KeyBridgeMemory        = "bridgeMemoryMiB"
	KeyBridgeTaskCount     = "bridgeTaskCount"
	KeyBridgeMinTasks      = "bridgeMinTasks"
	KeyBridgeMaxTasks      = "bridgeMaxTasks"
	KeyBridgeCPUTarget     = "bridgeCpuTargetPercent"
	KeyBridgeEnvironment   = "bridgeEnvironment"
	KeyVpcID               = "vpcId"
	KeyVpcSubnetIDs        = "vpcSubnetIds"
	KeyVpcAZs              = "vpcAvailabilityZones"
	KeyVpcCidr             = "vpcCidr"
	KeyVpcMaxAZs           = "vpcMaxAzs"
	KeyVpcNatGateways      = "vpcNatGateways"
	KeyConsumers           = "consumers"
	KeyAlarms              = "alarms"
	KeyAlarmEmail          = "alarmEmail"
	KeyLogRetentionDays    = "logRetentionDays"
	KeyRemovalPolicy       = "removalPolicy"
	KeyLambdaDistDir       = "lambdaDistDir"
	KeyOnFailure           = "onFailureDestination"
	KeyOnFailureExpiryDays = "onFailureBucketExpiryDays"
	KeyArchive             = "archive"
	KeyArchiveExpiryDays   = "archiveExpiryDays"
	KeyAcceptReordering    = "acceptKeyReordering"
	KeyNsqdPorts           = "nsqdPorts"
	KeyVpcEndpoints        = "vpcInterfaceEndpoints"
	KeyRoutes              = "routes"
	KeyBridgeGroups        = "bridgeGroups"
)

// KnownKeys are all context keys this app reads. Plain camelCase keys outside this list are
// reported as errors (a typo in -c would otherwise be silently ignored).
var KnownKeys = []string{
	KeyStackName, KeyAccount, KeyRegion, KeyStreamName, KeyStreamMode, KeyShardCount, KeyRetentionHours,
	KeyLookupdHTTP, KeyNsqdTCP, KeyNsqdHTTP, KeyTopic, KeyChannel, KeyDeadLetterTopic, KeyAuthSecretArn,
	KeyAuthSecretKmsKeyArn, KeyTLS, KeyPartitionKey, KeyKeyBuckets, KeyMaxBufferedTime, KeyMaxInFlight,
	KeyBridgeLogLevel, KeyShutdownTimeout, KeyBridgeCPU, KeyBridgeMemory, KeyBridgeTaskCount,
	KeyBridgeMinTasks, KeyBridgeMaxTasks, KeyBridgeCPUTarget, KeyBridgeEnvironment, KeyVpcID, KeyVpcSubnetIDs, KeyVpcAZs,
	KeyVpcCidr, KeyVpcMaxAZs, KeyVpcNatGateways, KeyConsumers, KeyAlarms, KeyAlarmEmail,
	KeyLogRetentionDays, KeyRemovalPolicy, KeyLambdaDistDir, KeyOnFailure, KeyOnFailureExpiryDays,
	KeyArchive, KeyArchiveExpiryDays, KeyAcceptReordering, KeyNsqdPorts, KeyVpcEndpoints,
	KeyAllowPlaintextAuth, KeyTLSRootCASecretArn, KeyTLSCertSecretArn, KeyTLSKeySecretArn, KeyTLSSecretsKmsKeyArn,
	KeyRoutes, KeyBridgeGroups,
}
