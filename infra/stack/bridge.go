package stack

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapplicationautoscaling"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecrassets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssecretsmanager"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/nsqk/nsqk/infra/config"
)

// Bridge metric contract (Embedded Metric Format lines on stdout, see functions/bridge).
const (
	BridgeNamespace     = "NSQK/Bridge"
	BridgeDimension     = "Stream"
	ConsumerNamespace   = "NSQK/Consumer"
	ConsumerDimension   = "Function"
	bridgeContainerName = "bridge"
	bridgeUID           = "65532:65532" // distroless "nonroot"
)

// BridgeTaskActions is the complete list of actions the bridge task role gets on the stream.
var BridgeTaskActions = []string{
	"kinesis:PutRecords", "kinesis:PutRecord", "kinesis:ListShards", "kinesis:DescribeStreamSummary",
}

// BridgeImageExcludes narrows the image's build context (the repository root, after its
// .dockerignore) to what `go build ./functions/bridge` reads: go.mod, go.sum, the bridge's main
// package, shared/ and third_party/ (modules replaced by a local copy), without tests and test
// data. The asset hash, and so the image and the task definition, then change only when the bridge
// binary can; stray files at the root (local builds) stay out. A test checks with `go list -deps`
// that the bridge imports nothing outside this set.
var BridgeImageExcludes = []string{
	"*", "!go.mod", "!go.sum", "!shared", "!third_party", "!functions/bridge",
	"**/*_test.go", "**/testdata", "**/*.test", "**/node_modules",
}

// Bridge is the ECS Fargate service that moves NSQ messages into the stream.
type Bridge struct {
	Cluster        awsecs.Cluster
	Service        awsecs.FargateService
	TaskDefinition awsecs.FargateTaskDefinition
	TaskRole       awsiam.Role
	LogGroup       awslogs.LogGroup
}

func newBridge(scope constructs.Construct, cfg *config.Config, net *Network, st *StreamResources, imageDir, dockerfile string) *Bridge {
	b := cfg.Bridge

	cluster := awsecs.NewCluster(scope, jsii.String("Cluster"), &awsecs.ClusterProps{
		Vpc:                 net.Vpc,
		ContainerInsightsV2: awsecs.ContainerInsights_ENABLED,
	})

	logGroup := awslogs.NewLogGroup(scope, jsii.String("BridgeLogs"), &awslogs.LogGroupProps{
		Retention:     retentionDays(cfg.LogRetentionDays),
		RemovalPolicy: removalPolicy(cfg),
	})

	// Task role: exactly the producer actions on this stream and the data key on its CMK.
	taskRole := awsiam.NewRole(scope, jsii.String("BridgeTaskRole"), &awsiam.RoleProps{
		Description: jsii.String("nsqk bridge task: put records into the stream, nothing else"),
		AssumedBy: awsiam.NewServicePrincipal(jsii.String("ecs-tasks.amazonaws.com"), &awsiam.ServicePrincipalOpts{
			Conditions: &map[string]any{"StringEquals": map[string]any{"aws:SourceAccount": awscdk.Aws_ACCOUNT_ID()}},
		}),
	})
	awsiam.NewPolicy(scope, jsii.String("BridgeTaskPolicy"), &awsiam.PolicyProps{
		Roles: &[]awsiam.IRole{taskRole},
		Statements: &[]awsiam.PolicyStatement{
			awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
				Sid:       jsii.String("PutRecordsIntoTheStream"),
				Actions:   jsii.Strings(BridgeTaskActions...),
				Resources: &[]*string{st.Stream.StreamArn()},
			}),
			awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
				Sid:       jsii.String("EncryptRecordsWithTheStreamKey"),
				Actions:   jsii.Strings("kms:GenerateDataKey"),
				Resources: &[]*string{st.Key.KeyArn()},
			}),
		},
	})

	taskDef := awsecs.NewFargateTaskDefinition(scope, jsii.String("BridgeTask"), &awsecs.FargateTaskDefinitionProps{
		Family:         jsii.String(cfg.StackName + "-bridge"),
		Cpu:            jsii.Number(float64(b.CPU)),
		MemoryLimitMiB: jsii.Number(float64(b.MemoryMiB)),
		RuntimePlatform: &awsecs.RuntimePlatform{
			CpuArchitecture:       awsecs.CpuArchitecture_ARM64(),
			OperatingSystemFamily: awsecs.OperatingSystemFamily_LINUX(),
		},
		TaskRole: taskRole,
		// The root filesystem is read-only: /tmp is a task-local scratch volume.
		Volumes: &[]*awsecs.Volume{{Name: jsii.String("tmp")}},
	})

	image := awsecs.ContainerImage_FromAsset(jsii.String(imageDir), &awsecs.AssetImageProps{
		File:     jsii.String(dockerfile),
		Platform: awsecrassets.Platform_LINUX_ARM64(),
		Exclude:  jsii.Strings(BridgeImageExcludes...),
	})

	var secrets *map[string]awsecs.Secret
	if cfg.NSQ.AuthSecretArn != "" {
		secret := awssecretsmanager.Secret_FromSecretCompleteArn(scope, jsii.String("NsqAuthSecret"), jsii.String(cfg.NSQ.AuthSecretArn))
		secrets = &map[string]awsecs.Secret{"NSQK_AUTH_SECRET": awsecs.Secret_FromSecretsManager(secret, nil)}
		if cfg.NSQ.AuthSecretKmsKeyArn != "" {
			// The secret is encrypted with a customer managed key: the execution role (which fetches
			// the secret when the task starts) needs to decrypt it.
			secretKey := awskms.Key_FromKeyArn(scope, jsii.String("NsqAuthSecretKey"), jsii.String(cfg.NSQ.AuthSecretKmsKeyArn))
			taskDef.ObtainExecutionRole().AddToPrincipalPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
				Sid:       jsii.String("DecryptTheNsqAuthSecret"),
				Actions:   jsii.Strings("kms:Decrypt"),
				Resources: &[]*string{secretKey.KeyArn()},
				Conditions: &map[string]any{
					"StringEquals": map[string]any{"kms:ViaService": fmt.Sprintf("secretsmanager.%s.amazonaws.com", regionFromArn(cfg.NSQ.AuthSecretArn))},
				},
			}))
		}
	}

	secrets = addTLSSecrets(scope, cfg, taskDef, secrets)

	container := taskDef.AddContainer(jsii.String(bridgeContainerName), &awsecs.ContainerDefinitionOptions{
		ContainerName:          jsii.String(bridgeContainerName),
		Image:                  image,
		Essential:              jsii.Bool(true),
		User:                   jsii.String(bridgeUID),
		ReadonlyRootFilesystem: jsii.Bool(true),
		Environment:            bridgeEnvironment(cfg, st),
		Secrets:                secrets,
		StopTimeout:            awscdk.Duration_Seconds(jsii.Number(b.StopTimeout().Seconds())),
		HealthCheck: &awsecs.HealthCheck{
			Command:     jsii.Strings("CMD", "/nsqk-bridge", "--healthcheck"),
			Interval:    awscdk.Duration_Seconds(jsii.Number(15)),
			Timeout:     awscdk.Duration_Seconds(jsii.Number(5)),
			Retries:     jsii.Number(3),
			StartPeriod: awscdk.Duration_Seconds(jsii.Number(30)),
		},
		// NON_BLOCKING: a slow log pipe must never stall the hot path; the 25 MiB buffer holds
		// minutes of logs and EMF lines. A dropped EMF line loses one sample, not data.
		Logging: awsecs.LogDriver_AwsLogs(&awsecs.AwsLogDriverProps{
			LogGroup:      logGroup,
			StreamPrefix:  jsii.String("bridge"),
			Mode:          awsecs.AwsLogDriverMode_NON_BLOCKING,
			MaxBufferSize: awscdk.Size_Mebibytes(jsii.Number(25)),
		}),
		LinuxParameters: bridgeLinuxParameters(scope),
	})
	container.AddMountPoints(&awsecs.MountPoint{
		ContainerPath: jsii.String("/tmp"),
		SourceVolume:  jsii.String("tmp"),
		ReadOnly:      jsii.Bool(false),
	})

	// No inbound; outbound only HTTPS (the AWS APIs, through the endpoints or the NAT gateway) and
	// the NSQ ports. NSQ hosts are named by DNS (lookupd names them at run time), so the rules
	// cannot narrow the destination addresses. Traffic to the VPC's DNS resolver is not subject to
	// security groups.
	sg := awsec2.NewSecurityGroup(scope, jsii.String("BridgeSecurityGroup"), &awsec2.SecurityGroupProps{
		Vpc:              net.Vpc,
		Description:      jsii.String("nsqk bridge: no inbound; outbound HTTPS to the AWS APIs and the NSQ ports only"),
		AllowAllOutbound: jsii.Bool(false),
	})
	sg.AddEgressRule(awsec2.Peer_AnyIpv4(), awsec2.Port_Tcp(jsii.Number(443)), jsii.String("AWS APIs (HTTPS)"), nil)
	for _, port := range cfg.NSQ.Ports() {
		sg.AddEgressRule(awsec2.Peer_AnyIpv4(), awsec2.Port_Tcp(jsii.Number(float64(port))), jsii.String(fmt.Sprintf("NSQ (port %d)", port)), nil)
	}

	// Two bridge tasks on one NSQ channel split a key's messages between them and can write them out
	// of order. With at most one task (the default), deployments stop the old task before the new one
	// starts (NSQ holds the messages meanwhile) so there is never a second bridge; with more tasks the
	// usual rolling deployment applies (order is per task then anyway).
	minHealthy, maxHealthy := 100.0, 200.0
	if b.MaxCount == 1 {
		minHealthy, maxHealthy = 0, 100
	}
	svcProps := &awsecs.FargateServiceProps{
		Cluster:              cluster,
		TaskDefinition:       taskDef,
		VpcSubnets:           net.Subnets,
		SecurityGroups:       &[]awsec2.ISecurityGroup{sg},
		AssignPublicIp:       jsii.Bool(false),
		MinHealthyPercent:    jsii.Number(minHealthy),
		MaxHealthyPercent:    jsii.Number(maxHealthy),
		CircuitBreaker:       &awsecs.DeploymentCircuitBreaker{Enable: jsii.Bool(true), Rollback: jsii.Bool(true)},
		EnableECSManagedTags: jsii.Bool(true),
		PropagateTags:        awsecs.PropagatedTagSource_SERVICE,
		PlatformVersion:      awsecs.FargatePlatformVersion_LATEST,
	}
	if b.DesiredCount > 0 {
		svcProps.DesiredCount = jsii.Number(float64(b.DesiredCount))
	}
	service := awsecs.NewFargateService(scope, jsii.String("BridgeService"), svcProps)

	scaling := service.AutoScaleTaskCount(&awsapplicationautoscaling.EnableScalingProps{
		MinCapacity: jsii.Number(float64(b.MinCount)),
		MaxCapacity: jsii.Number(float64(b.MaxCount)),
	})
	scaling.ScaleOnCpuUtilization(jsii.String("CpuTarget"), &awsecs.CpuUtilizationScalingProps{
		TargetUtilizationPercent: jsii.Number(float64(b.CPUTargetPercent)),
		ScaleOutCooldown:         awscdk.Duration_Seconds(jsii.Number(60)),
		ScaleInCooldown:          awscdk.Duration_Seconds(jsii.Number(300)),
	})

	cdknag.NagSuppressions_AddResourceSuppressions(taskDef, &[]*cdknag.NagPackSuppression{{
		Id: jsii.String("AwsSolutions-ECS2"),
		Reason: jsii.String("The bridge container's environment holds only non-secret settings (NSQ addresses, topic, channel, " +
			"stream name, tuning knobs) in the bridge's documented NSQK_* contract. The secrets, the NSQ auth secret and the " +
			"TLS material, are injected from Secrets Manager as ECS secrets (NSQK_AUTH_SECRET, NSQK_TLS_*_PEM)."),
	}}, jsii.Bool(false))

	cdknag.NagSuppressions_AddResourceSuppressions(taskDef.ObtainExecutionRole(), &[]*cdknag.NagPackSuppression{{
		Id:        jsii.String("AwsSolutions-IAM5"),
		AppliesTo: &[]interface{}{jsii.String("Resource::*")},
		Reason: jsii.String("Task execution role (generated by CDK for the image asset): ecr:GetAuthorizationToken, the ECR " +
			"login call, has no resource-level permissions and must be granted on \"*\". Every other statement of this " +
			"role is scoped to the asset repository, the bridge log group or the NSQ auth and TLS secrets."),
	}}, jsii.Bool(true))

	return &Bridge{Cluster: cluster, Service: service, TaskDefinition: taskDef, TaskRole: taskRole, LogGroup: logGroup}
}

// bridgeEnvironment renders the bridge's NSQK_* settings (flag --foo-bar = env NSQK_FOO_BAR).
func bridgeEnvironment(cfg *config.Config, st *StreamResources) *map[string]*string {
	b := cfg.Bridge
	env := map[string]*string{
		"NSQK_TOPIC":             jsii.String(cfg.NSQ.Topic),
		"NSQK_CHANNEL":           jsii.String(cfg.NSQ.Channel),
		"NSQK_STREAM":            st.Stream.StreamName(),
		"NSQK_PARTITION_KEY":     jsii.String(b.PartitionKey),
		"NSQK_KEY_BUCKETS":       jsii.String(strconv.Itoa(b.KeyBuckets)),
		"NSQK_MAX_BUFFERED_TIME": jsii.String(b.MaxBufferedTime.String()),
		"NSQK_METRICS_ADDRESS":   jsii.String(":9090"),
		"NSQK_CLOUDWATCH_EMF":    jsii.String("true"),
		"NSQK_LOG_LEVEL":         jsii.String(b.LogLevel),
		"NSQK_SHUTDOWN_TIMEOUT":  jsii.String(b.ShutdownTimeout.String()),
	}
	if len(cfg.NSQ.LookupdHTTPAddresses) > 0 {
		env["NSQK_LOOKUPD_HTTP_ADDRESS"] = jsii.String(strings.Join(cfg.NSQ.LookupdHTTPAddresses, ","))
	} else {
		env["NSQK_NSQD_TCP_ADDRESS"] = jsii.String(strings.Join(cfg.NSQ.NsqdTCPAddresses, ","))
		if len(cfg.NSQ.NsqdHTTPAddresses) > 0 {
			env["NSQK_NSQD_HTTP_ADDRESS"] = jsii.String(strings.Join(cfg.NSQ.NsqdHTTPAddresses, ","))
		}
	}
	for k, v := range b.ExtraEnv {
		env[k] = jsii.String(v)
	}
	if b.MaxInFlight > 0 {
		env["NSQK_MAX_IN_FLIGHT"] = jsii.String(strconv.Itoa(b.MaxInFlight))
	}
	if cfg.NSQ.DeadLetterTopic != "" {
		env["NSQK_DEAD_LETTER_TOPIC"] = jsii.String(cfg.NSQ.DeadLetterTopic)
	}
	if cfg.NSQ.TLS {
		env["NSQK_TLS"] = jsii.String("true")
	}
	if cfg.NSQ.AllowPlaintextAuth {
		env["NSQK_ALLOW_PLAINTEXT_AUTH"] = jsii.String("true")
	}
	return &env
}

// bridgeLinuxParameters drops every Linux capability: the bridge only opens outbound TCP
// connections and binds :9090, neither needs one.
func bridgeLinuxParameters(scope constructs.Construct) awsecs.LinuxParameters {
	lp := awsecs.NewLinuxParameters(scope, jsii.String("BridgeLinuxParameters"), &awsecs.LinuxParametersProps{})
	lp.DropCapabilities(awsecs.Capability_ALL)
	return lp
}

// regionFromArn returns the region field of an ARN (validated by config.Parse).
func regionFromArn(arn string) string {
	parts := strings.SplitN(arn, ":", 5)
	if len(parts) < 4 {
		return ""
	}
	return parts[3]
}
