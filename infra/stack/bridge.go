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
	BridgeNamespace      = "NSQK/Bridge"
	BridgeDimension      = "Stream"
	BridgeRouteDimension = "Route" // with routes, besides Stream
	// With bridgeGroups N > 1, group i's metrics are published under Partition "i/N" too (and
	// also without it, aggregated over the groups).
	BridgePartitionDimension = "Partition"
	ConsumerNamespace        = "NSQK/Consumer"
	ConsumerDimension        = "Function"
	bridgeContainerName      = "bridge"
	bridgeUID                = "65532:65532" // distroless "nonroot"
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

// Bridge is the ECS Fargate service that moves NSQ messages into the stream, or with
// bridgeGroups N services of one task each that split the nsqd nodes.
type Bridge struct {
	Cluster        awsecs.Cluster
	Service        awsecs.FargateService        // the first group's
	TaskDefinition awsecs.FargateTaskDefinition // the first group's
	TaskRole       awsiam.Role
	LogGroup       awslogs.LogGroup
	Groups         []*BridgeGroup
}

// BridgeGroup is one service of the bridge: with bridgeGroups N > 1, group i reads the nsqd
// nodes of partition i/N.
type BridgeGroup struct {
	Index          int
	Partition      string // "i/N"; empty with one group (the bridge reads every node)
	Service        awsecs.FargateService
	TaskDefinition awsecs.FargateTaskDefinition
}

// suffix is appended to the group's construct ids and alarm ids: none with one group, so a
// stack without bridgeGroups keeps its resources.
func (g *BridgeGroup) suffix() string {
	if g.Partition == "" {
		return ""
	}
	return fmt.Sprintf("Group%d", g.Index)
}

func newBridge(scope constructs.Construct, cfg *config.Config, net *Network, streams []*StreamResources, imageDir, dockerfile string) *Bridge {
	b := cfg.Bridge
	st := streams[0]

	cluster := awsecs.NewCluster(scope, jsii.String("Cluster"), &awsecs.ClusterProps{
		Vpc:                 net.Vpc,
		ContainerInsightsV2: awsecs.ContainerInsights_ENABLED,
	})

	logGroup := awslogs.NewLogGroup(scope, jsii.String("BridgeLogs"), &awslogs.LogGroupProps{
		Retention:     retentionDays(cfg.LogRetentionDays),
		RemovalPolicy: removalPolicy(cfg),
	})

	// Task role: exactly the producer actions on the streams and the data key on their CMK.
	taskRole := awsiam.NewRole(scope, jsii.String("BridgeTaskRole"), &awsiam.RoleProps{
		Description: jsii.String("nsqk bridge task: put records into the stream, nothing else"),
		AssumedBy: awsiam.NewServicePrincipal(jsii.String("ecs-tasks.amazonaws.com"), &awsiam.ServicePrincipalOpts{
			Conditions: &map[string]any{"StringEquals": map[string]any{"aws:SourceAccount": awscdk.Aws_ACCOUNT_ID()}},
		}),
	})
	arns := streamArns(streams)
	awsiam.NewPolicy(scope, jsii.String("BridgeTaskPolicy"), &awsiam.PolicyProps{
		Roles: &[]awsiam.IRole{taskRole},
		Statements: &[]awsiam.PolicyStatement{
			awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
				Sid:       jsii.String("PutRecordsIntoTheStream"),
				Actions:   jsii.Strings(BridgeTaskActions...),
				Resources: &arns,
			}),
			awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
				Sid:       jsii.String("EncryptRecordsWithTheStreamKey"),
				Actions:   jsii.Strings("kms:GenerateDataKey"),
				Resources: &[]*string{st.Key.KeyArn()},
			}),
		},
	})

	image := awsecs.ContainerImage_FromAsset(jsii.String(imageDir), &awsecs.AssetImageProps{
		File:     jsii.String(dockerfile),
		Platform: awsecrassets.Platform_LINUX_ARM64(),
		Exclude:  jsii.Strings(BridgeImageExcludes...),
	})
	secrets, allowDecrypt := bridgeSecrets(scope, cfg)
	linux := bridgeLinuxParameters(scope)

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

	br := &Bridge{Cluster: cluster, TaskRole: taskRole, LogGroup: logGroup}
	for i := range b.Groups {
		g := &BridgeGroup{Index: i}
		if b.Groups > 1 {
			g.Partition = fmt.Sprintf("%d/%d", i, b.Groups)
		}
		newBridgeGroup(scope, cfg, g, bridgeGroupDeps{
			cluster: cluster, net: net, sg: sg, taskRole: taskRole, logGroup: logGroup, image: image,
			secrets: secrets, allowDecrypt: allowDecrypt, linux: linux, env: bridgeEnvironment(cfg, st, g.Partition),
		})
		br.Groups = append(br.Groups, g)
	}
	br.Service, br.TaskDefinition = br.Groups[0].Service, br.Groups[0].TaskDefinition
	return br
}

type bridgeGroupDeps struct {
	cluster      awsecs.Cluster
	net          *Network
	sg           awsec2.SecurityGroup
	taskRole     awsiam.Role
	logGroup     awslogs.LogGroup
	image        awsecs.ContainerImage
	secrets      *map[string]awsecs.Secret
	allowDecrypt func(awsecs.FargateTaskDefinition)
	linux        awsecs.LinuxParameters
	env          *map[string]*string
}

// newBridgeGroup creates one group's task definition and service.
func newBridgeGroup(scope constructs.Construct, cfg *config.Config, g *BridgeGroup, d bridgeGroupDeps) {
	b := cfg.Bridge
	family := cfg.StackName + "-bridge"
	if g.Partition != "" {
		family = fmt.Sprintf("%s-bridge-%d", cfg.StackName, g.Index)
	}
	taskDef := awsecs.NewFargateTaskDefinition(scope, jsii.String("BridgeTask"+g.suffix()), &awsecs.FargateTaskDefinitionProps{
		Family:         jsii.String(family),
		Cpu:            jsii.Number(float64(b.CPU)),
		MemoryLimitMiB: jsii.Number(float64(b.MemoryMiB)),
		RuntimePlatform: &awsecs.RuntimePlatform{
			CpuArchitecture:       awsecs.CpuArchitecture_ARM64(),
			OperatingSystemFamily: awsecs.OperatingSystemFamily_LINUX(),
		},
		TaskRole: d.taskRole,
		// The root filesystem is read-only: /tmp is a task-local scratch volume.
		Volumes: &[]*awsecs.Volume{{Name: jsii.String("tmp")}},
	})
	d.allowDecrypt(taskDef)

	container := taskDef.AddContainer(jsii.String(bridgeContainerName), &awsecs.ContainerDefinitionOptions{
		ContainerName:          jsii.String(bridgeContainerName),
		Image:                  d.image,
		Essential:              jsii.Bool(true),
		User:                   jsii.String(bridgeUID),
		ReadonlyRootFilesystem: jsii.Bool(true),
		Environment:            d.env,
		Secrets:                d.secrets,
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
			LogGroup:      d.logGroup,
			StreamPrefix:  jsii.String("bridge"),
			Mode:          awsecs.AwsLogDriverMode_NON_BLOCKING,
			MaxBufferSize: awscdk.Size_Mebibytes(jsii.Number(25)),
		}),
		LinuxParameters: d.linux,
	})
	container.AddMountPoints(&awsecs.MountPoint{
		ContainerPath: jsii.String("/tmp"),
		SourceVolume:  jsii.String("tmp"),
		ReadOnly:      jsii.Bool(false),
	})

	// Two bridge tasks on one NSQ channel split a key's messages between them and can write them out
	// of order. With at most one task (the default, and always for a group), deployments stop the
	// old task before the new one starts (NSQ holds the messages meanwhile) so there is never a
	// second bridge on the same nodes; with more tasks the usual rolling deployment applies (order
	// is per task then anyway).
	minHealthy, maxHealthy := 100.0, 200.0
	if b.MaxCount == 1 {
		minHealthy, maxHealthy = 0, 100
	}
	svcProps := &awsecs.FargateServiceProps{
		Cluster:              d.cluster,
		TaskDefinition:       taskDef,
		VpcSubnets:           d.net.Subnets,
		SecurityGroups:       &[]awsec2.ISecurityGroup{d.sg},
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
	if g.Partition != "" {
		// A group is exactly one task: autoscaling would add a second reader of its nodes.
		svcProps.DesiredCount = jsii.Number(1)
	}
	service := awsecs.NewFargateService(scope, jsii.String("BridgeService"+g.suffix()), svcProps)

	if g.Partition == "" {
		scaling := service.AutoScaleTaskCount(&awsapplicationautoscaling.EnableScalingProps{
			MinCapacity: jsii.Number(float64(b.MinCount)),
			MaxCapacity: jsii.Number(float64(b.MaxCount)),
		})
		scaling.ScaleOnCpuUtilization(jsii.String("CpuTarget"), &awsecs.CpuUtilizationScalingProps{
			TargetUtilizationPercent: jsii.Number(float64(b.CPUTargetPercent)),
			ScaleOutCooldown:         awscdk.Duration_Seconds(jsii.Number(60)),
			ScaleInCooldown:          awscdk.Duration_Seconds(jsii.Number(300)),
		})
	}

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

	g.Service, g.TaskDefinition = service, taskDef
}

// bridgeSecrets imports the NSQ auth secret and the TLS material once for every group; the
// returned function lets a task's execution role (which fetches them when the task starts)
// decrypt them with their customer managed keys, through Secrets Manager only.
func bridgeSecrets(scope constructs.Construct, cfg *config.Config) (*map[string]awsecs.Secret, func(awsecs.FargateTaskDefinition)) {
	var secrets *map[string]awsecs.Secret
	var grants []func(awsecs.FargateTaskDefinition)
	if cfg.NSQ.AuthSecretArn != "" {
		secret := awssecretsmanager.Secret_FromSecretCompleteArn(scope, jsii.String("NsqAuthSecret"), jsii.String(cfg.NSQ.AuthSecretArn))
		secrets = &map[string]awsecs.Secret{"NSQK_AUTH_SECRET": awsecs.Secret_FromSecretsManager(secret, nil)}
		if cfg.NSQ.AuthSecretKmsKeyArn != "" {
			secretKey := awskms.Key_FromKeyArn(scope, jsii.String("NsqAuthSecretKey"), jsii.String(cfg.NSQ.AuthSecretKmsKeyArn))
			grants = append(grants, func(taskDef awsecs.FargateTaskDefinition) {
				taskDef.ObtainExecutionRole().AddToPrincipalPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
					Sid:       jsii.String("DecryptTheNsqAuthSecret"),
					Actions:   jsii.Strings("kms:Decrypt"),
					Resources: &[]*string{secretKey.KeyArn()},
					Conditions: &map[string]any{
						"StringEquals": map[string]any{"kms:ViaService": fmt.Sprintf("secretsmanager.%s.amazonaws.com", regionFromArn(cfg.NSQ.AuthSecretArn))},
					},
				}))
			})
		}
	}
	secrets, tlsGrant := addTLSSecrets(scope, cfg, secrets)
	if tlsGrant != nil {
		grants = append(grants, tlsGrant)
	}
	return secrets, func(taskDef awsecs.FargateTaskDefinition) {
		for _, g := range grants {
			g(taskDef)
		}
	}
}

// bridgeEnvironment renders the bridge's NSQK_* settings (flag --foo-bar = env NSQK_FOO_BAR).
// With routes the topics and streams are in NSQK_CONFIG_YAML, rendered from context "routes";
// every other setting stays global (each route field left out takes it). A group reads the nsqd
// nodes of its partition.
func bridgeEnvironment(cfg *config.Config, st *StreamResources, partition string) *map[string]*string {
	b := cfg.Bridge
	env := map[string]*string{
		"NSQK_CHANNEL":           jsii.String(cfg.NSQ.Channel),
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
	if y := cfg.BridgeConfigYAML(); y != "" {
		env["NSQK_CONFIG_YAML"] = jsii.String(y)
	} else {
		env["NSQK_TOPIC"] = jsii.String(cfg.NSQ.Topic)
		env["NSQK_STREAM"] = st.Stream.StreamName()
	}
	if partition != "" {
		env["NSQK_NSQD_PARTITION"] = jsii.String(partition)
	}
	for k, v := range b.ExtraEnv {
		env[k] = jsii.String(v)
	}
	if b.MaxInFlight > 0 {
		env["NSQK_MAX_IN_FLIGHT"] = jsii.String(strconv.Itoa(b.MaxInFlight))
	}
	if cfg.NSQ.DeadLetterTopic != "" && len(cfg.Routes) == 0 {
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
