package stack

// CDK assertion tests. Two variants are synthesized once each and shared by the subtests:
//   - "default": cdk.json's context as committed (what `make synth` builds): provisioned stream,
//     new VPC, lookupd source, standard-iterator consumers, retain;
//   - "prod": every optional path: on-demand stream, imported VPC (explicit env), nsqd source with
//     TLS and an auth secret, enhanced fan-out, AT_TIMESTAMP, disabled mapping, alarm e-mails,
//     threshold overrides, fixed task count, destroy.

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssqs"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/nsqk/nsqk/infra/config"
)

func defaultVariant(t *testing.T) *variant { return synthVariant(t, "default", nil) }

const (
	prodSecretArn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:nsq/auth-AbC123"
	prodSecretKey = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	prodTimestamp = 1738281600 // 2025-01-31T00:00:00Z
)

func prodVariant(t *testing.T) *variant {
	return synthVariant(t, "prod", map[string]any{
		config.KeyStackName:           "nsqk-prod",
		config.KeyAccount:             "123456789012",
		config.KeyRegion:              "eu-west-1",
		config.KeyStreamName:          "prod-locations",
		config.KeyStreamMode:          "on-demand",
		config.KeyRetentionHours:      168,
		config.KeyLookupdHTTP:         nil,
		config.KeyNsqdTCP:             "nsqd-0.prod:4150,nsqd-1.prod:4150",
		config.KeyNsqdHTTP:            []any{"nsqd-0.prod:4151", "nsqd-1.prod:4151"},
		config.KeyBridgeEnvironment:   map[string]any{"NSQK_ORDERING": "strict", "NSQK_MAX_ATTEMPTS": 10.0},
		config.KeyTopic:               "positions",
		config.KeyChannel:             "kinesis",
		config.KeyDeadLetterTopic:     "positions-dlq",
		config.KeyAuthSecretArn:       prodSecretArn,
		config.KeyAuthSecretKmsKeyArn: prodSecretKey,
		config.KeyTLS:                 true,
		config.KeyMaxInFlight:         2000,
		config.KeyKeyBuckets:          8,
		config.KeyBridgeCPU:           1024,
		config.KeyBridgeMemory:        2048,
		config.KeyBridgeTaskCount:     2,
		config.KeyBridgeMinTasks:      2,
		config.KeyBridgeMaxTasks:      6,
		config.KeyBridgeCPUTarget:     50,
		config.KeyShutdownTimeout:     "60s",
		config.KeyVpcID:               "vpc-0123456789abcdef0",
		config.KeyVpcSubnetIDs:        "subnet-0aaaaaaaaaaaaaaa1,subnet-0aaaaaaaaaaaaaaa2,subnet-0aaaaaaaaaaaaaaa3",
		config.KeyVpcAZs:              "eu-west-1a,eu-west-1b,eu-west-1c",
		config.KeyConsumers: map[string]any{
			"monitor": map[string]any{
				"enabled": false, "startingPosition": "AT_TIMESTAMP", "startingPositionTimestamp": "2025-01-31T00:00:00Z",
				"batchSize": 50, "batchingWindow": "1s",
			},
			"lastlocation": map[string]any{
				"enhancedFanOut": true, "batchSize": 1000, "batchingWindow": "5s", "parallelizationFactor": 8,
				"retryAttempts": 100, "maxRecordAge": "24h", "memoryMiB": 512, "timeout": "120s",
			},
		},
		config.KeyAlarms:           map[string]any{"bridgeNsqBacklog": 50000, "lambdaIteratorAgeMs": 300000},
		config.KeyAlarmEmail:       "ops@example.com,oncall@example.com",
		config.KeyLogRetentionDays: 90,
		config.KeyRemovalPolicy:    "destroy",
		config.KeyAcceptReordering: true,
	})
}

// ---------------------------------------------------------------------------------------------
// The default variant (make synth).

func TestDefaultStack(t *testing.T) {
	v := defaultVariant(t)
	cfg := v.cfg

	t.Run("ResourceCounts", func(t *testing.T) {
		want := map[string]int{
			"AWS::ApplicationAutoScaling::ScalableTarget": 1,
			"AWS::ApplicationAutoScaling::ScalingPolicy":  1,
			"AWS::CloudWatch::Alarm":                      26,
			"AWS::CloudWatch::Dashboard":                  1,
			"AWS::DynamoDB::Table":                        2, // locations, checkpoints
			"AWS::EC2::EIP":                               1,
			"AWS::EC2::FlowLog":                           1,
			"AWS::EC2::InternetGateway":                   1,
			"AWS::EC2::NatGateway":                        1,
			"AWS::EC2::Route":                             4,
			"AWS::EC2::RouteTable":                        4,
			"AWS::EC2::SecurityGroup":                     2, // bridge, interface endpoints
			"AWS::EC2::Subnet":                            4,
			"AWS::EC2::SubnetRouteTableAssociation":       4,
			"AWS::EC2::VPC":                               1,
			"AWS::EC2::VPCEndpoint":                       6, // S3 gateway + 5 interface endpoints (no secret, no Secrets Manager endpoint)
			"AWS::EC2::VPCGatewayAttachment":              1,
			"AWS::ECS::Cluster":                           1,
			"AWS::ECS::Service":                           1,
			"AWS::ECS::TaskDefinition":                    1,
			"AWS::IAM::Policy":                            5, // bridge task, execution, 2 consumers, flow logs
			"AWS::IAM::Role":                              6, // + restrict-default-SG custom resource provider
			"AWS::KMS::Alias":                             2,
			"AWS::KMS::Key":                               2,
			"AWS::Kinesis::Stream":                        1,
			"AWS::Lambda::EventSourceMapping":             2,
			"AWS::Lambda::Function":                       3, // 2 consumers + the custom resource provider
			"AWS::Logs::LogGroup":                         4, // bridge, 2 consumers, flow logs
			"AWS::SNS::Topic":                             1,
			"AWS::SNS::TopicPolicy":                       1,
			"AWS::SQS::Queue":                             4, // per consumer: on-failure queue, dead letters
			"AWS::SQS::QueuePolicy":                       4,
			"Custom::VpcRestrictDefaultSG":                1,
		}
		got := map[string]int{}
		for _, r := range v.json["Resources"].(map[string]any) {
			got[r.(map[string]any)["Type"].(string)]++
		}
		for typ, n := range want {
			if got[typ] != n {
				t.Errorf("%s: got %d, want %d", typ, got[typ], n)
			}
			must(t, "ResourceCountIs "+typ, func() { v.template.ResourceCountIs(jsii.String(typ), jsii.Number(float64(n))) })
		}
		for typ, n := range got {
			if _, ok := want[typ]; !ok {
				t.Errorf("unexpected resource type %s (%d)", typ, n)
			}
		}
	})

	t.Run("StreamEncryptedWithRotatingCustomerKey", func(t *testing.T) {
		keyID, _ := v.byPath(t, "StreamKey/Resource")
		must(t, "stream", func() {
			v.template.HasResource(jsii.String("AWS::Kinesis::Stream"), map[string]any{
				"Properties": map[string]any{
					"Name":                 "nsqk-locations",
					"RetentionPeriodHours": 24,
					"ShardCount":           2,
					"StreamModeDetails":    map[string]any{"StreamMode": "PROVISIONED"},
					"StreamEncryption": map[string]any{
						"EncryptionType": "KMS",
						"KeyId":          map[string]any{"Fn::GetAtt": []any{keyID, "Arn"}},
					},
				},
				"DeletionPolicy":      "Retain",
				"UpdateReplacePolicy": "Retain",
			})
		})
		for _, path := range []string{"StreamKey/Resource", "OpsKey/Resource"} {
			_, key := v.byPath(t, path)
			wantEq(t, path+" rotation", props(key)["EnableKeyRotation"], true)
			wantEq(t, path+" deletion policy", key["DeletionPolicy"], "Retain")
		}
		must(t, "alias", func() {
			v.template.HasResourceProperties(jsii.String("AWS::KMS::Alias"), map[string]any{"AliasName": "alias/nsqk/stream"})
		})
		if n := len(v.resources("AWS::Kinesis::StreamConsumer")); n != 0 {
			t.Errorf("no enhanced fan-out by default, got %d stream consumers", n)
		}
	})

	t.Run("OpsKeyLetsCloudWatchPublishToTheEncryptedTopic", func(t *testing.T) {
		_, key := v.byPath(t, "OpsKey/Resource")
		found := false
		for _, s := range asList(get(props(key), "KeyPolicy", "Statement")) {
			if get(s, "Principal", "Service") == "cloudwatch.amazonaws.com" {
				found = true
				wantEq(t, "actions", get(s, "Action"), []any{"kms:Decrypt", "kms:GenerateDataKey*"})
			}
		}
		if !found {
			t.Error("ops key policy has no statement for cloudwatch.amazonaws.com")
		}
	})

	t.Run("BridgeTaskDefinition", func(t *testing.T) {
		_, td := v.one(t, "AWS::ECS::TaskDefinition")
		p := props(td)
		wantEq(t, "runtime platform", p["RuntimePlatform"], map[string]any{"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"})
		wantEq(t, "cpu", p["Cpu"], "512")
		wantEq(t, "memory", p["Memory"], "1024")
		wantEq(t, "compatibilities", p["RequiresCompatibilities"], []any{"FARGATE"})
		c := get(p, "ContainerDefinitions", 0)
		wantEq(t, "image is the staged asset", strings.Contains(ref(get(c, "Image")), "container-assets"), true)
		wantEq(t, "read-only root", get(c, "ReadonlyRootFilesystem"), true)
		wantEq(t, "non-root user", get(c, "User"), "65532:65532")
		wantEq(t, "stop timeout > NSQK_SHUTDOWN_TIMEOUT", get(c, "StopTimeout"), 40)
		wantEq(t, "health check", get(c, "HealthCheck"), map[string]any{
			"Command": []any{"CMD", "/nsqk-bridge", "--healthcheck"}, "Interval": 15, "Retries": 3, "StartPeriod": 30, "Timeout": 5,
		})
		wantEq(t, "capabilities", get(c, "LinuxParameters", "Capabilities"), map[string]any{"Drop": []any{"ALL"}})
		wantEq(t, "log driver", get(c, "LogConfiguration", "LogDriver"), "awslogs")
		wantEq(t, "log mode", get(c, "LogConfiguration", "Options", "mode"), "non-blocking")
		logsID, _ := v.byPath(t, "BridgeLogs/Resource")
		wantEq(t, "log group", get(c, "LogConfiguration", "Options", "awslogs-group"), map[string]any{"Ref": logsID})
		wantEq(t, "/tmp volume", get(c, "MountPoints"), []any{map[string]any{"ContainerPath": "/tmp", "ReadOnly": false, "SourceVolume": "tmp"}})
		wantEq(t, "no secrets without nsqAuthSecretArn", get(c, "Secrets"), nil)

		streamID, _ := v.one(t, "AWS::Kinesis::Stream")
		env := map[string]string{}
		for _, e := range asList(get(c, "Environment")) {
			env[get(e, "Name").(string)] = ref(get(e, "Value"))
		}
		wantEq(t, "environment", env, map[string]string{
			"NSQK_LOOKUPD_HTTP_ADDRESS": strings.Join(cfg.NSQ.LookupdHTTPAddresses, ","),
			"NSQK_TOPIC":                cfg.NSQ.Topic,
			"NSQK_CHANNEL":              cfg.NSQ.Channel,
			"NSQK_STREAM":               "Ref:" + streamID,
			"NSQK_PARTITION_KEY":        "user_id",
			"NSQK_KEY_BUCKETS":          "1",
			"NSQK_MAX_BUFFERED_TIME":    "100ms",
			"NSQK_METRICS_ADDRESS":      ":9090",
			"NSQK_CLOUDWATCH_EMF":       "true",
			"NSQK_LOG_LEVEL":            "info",
			"NSQK_SHUTDOWN_TIMEOUT":     "25s",
		})
	})

	t.Run("ClusterHasContainerInsights", func(t *testing.T) {
		must(t, "cluster", func() {
			v.template.HasResourceProperties(jsii.String("AWS::ECS::Cluster"), map[string]any{
				"ClusterSettings": []any{map[string]any{"Name": "containerInsights", "Value": "enabled"}},
			})
		})
	})

	t.Run("BridgeServiceAndAutoscaling", func(t *testing.T) {
		_, svc := v.one(t, "AWS::ECS::Service")
		p := props(svc)
		wantEq(t, "desired count left to autoscaling", p["DesiredCount"], nil)
		wantEq(t, "deployment", p["DeploymentConfiguration"], map[string]any{
			"DeploymentCircuitBreaker": map[string]any{"Enable": true, "Rollback": true},
			"MaximumPercent":           100, "MinimumHealthyPercent": 0,
		})
		wantEq(t, "no public IP", get(p, "NetworkConfiguration", "AwsvpcConfiguration", "AssignPublicIp"), "DISABLED")
		subnets := asList(get(p, "NetworkConfiguration", "AwsvpcConfiguration", "Subnets"))
		for _, s := range subnets {
			if !strings.Contains(ref(s), "Vpcbridge") {
				t.Errorf("bridge runs in a non-private subnet: %s", ref(s))
			}
		}
		wantEq(t, "subnet count", len(subnets), 2)
		_, sg := v.byPath(t, "BridgeSecurityGroup/Resource")
		wantEq(t, "no inbound rules", props(sg)["SecurityGroupIngress"], nil)
		wantEq(t, "outbound: HTTPS and the NSQ ports only", egressPorts(sg), []string{"0.0.0.0/0 tcp 4150", "0.0.0.0/0 tcp 4151", "0.0.0.0/0 tcp 4161", "0.0.0.0/0 tcp 443"})

		must(t, "scalable target", func() {
			v.template.HasResourceProperties(jsii.String("AWS::ApplicationAutoScaling::ScalableTarget"), map[string]any{
				"MinCapacity": 1, "MaxCapacity": 1, "ScalableDimension": "ecs:service:DesiredCount",
			})
		})
		must(t, "cpu target tracking", func() {
			v.template.HasResourceProperties(jsii.String("AWS::ApplicationAutoScaling::ScalingPolicy"), map[string]any{
				"PolicyType": "TargetTrackingScaling",
				"TargetTrackingScalingPolicyConfiguration": map[string]any{
					"PredefinedMetricSpecification": map[string]any{"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
					"TargetValue":                   60, "ScaleInCooldown": 300, "ScaleOutCooldown": 60,
				},
			})
		})
	})

	t.Run("BridgeTaskRoleExactActions", func(t *testing.T) {
		roleID, role := v.byPath(t, "BridgeTaskRole/Resource")
		streamID, _ := v.one(t, "AWS::Kinesis::Stream")
		keyID, _ := v.byPath(t, "StreamKey/Resource")
		equalStrings(t, "bridge task role", v.grants(t, roleID), sortedConcat(
			pairs(streamID+".Arn", "kinesis:DescribeStreamSummary", "kinesis:ListShards", "kinesis:PutRecord", "kinesis:PutRecords"),
			pairs(keyID+".Arn", "kms:GenerateDataKey"),
		))
		wantEq(t, "trust", get(props(role), "AssumeRolePolicyDocument", "Statement", 0, "Principal"), map[string]any{"Service": "ecs-tasks.amazonaws.com"})
	})

	t.Run("BridgeExecutionRoleExactActions", func(t *testing.T) {
		roleID, _ := v.byPath(t, "BridgeTask/ExecutionRole/Resource")
		logsID, _ := v.byPath(t, "BridgeLogs/Resource")
		got := v.grants(t, roleID)
		var repo string
		for _, g := range got {
			if strings.HasPrefix(g, "ecr:BatchGetImage @ ") {
				repo = strings.TrimPrefix(g, "ecr:BatchGetImage @ ")
			}
		}
		if !strings.Contains(repo, "container-assets") {
			t.Fatalf("image pull not scoped to the asset repository: %q", repo)
		}
		equalStrings(t, "execution role", got, sortedConcat(
			pairs(repo, "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"),
			pairs("*", "ecr:GetAuthorizationToken"),
			pairs(logsID+".Arn", "logs:CreateLogStream", "logs:PutLogEvents"),
		))
	})

	t.Run("ConsumerRolesExactActions", func(t *testing.T) {
		streamID, _ := v.one(t, "AWS::Kinesis::Stream")
		streamKey, _ := v.byPath(t, "StreamKey/Resource")
		opsKey, _ := v.byPath(t, "OpsKey/Resource")
		tableID, _ := v.byPath(t, "LocationsTable/Resource")
		checkpointsID, _ := v.byPath(t, "CheckpointTable/Resource")
		for _, name := range v.cfg.ConsumerNames() {
			id := consumerID(name)
			roleID, role := v.byPath(t, id+"Role/Resource")
			logsID, _ := v.byPath(t, id+"Logs/Resource")
			dlqID, _ := v.byPath(t, id+"Dlq/Resource")
			deadID, _ := v.byPath(t, id+"DeadLetters/Resource")
			want := [][]string{
				pairs(logsID+".Arn", "logs:CreateLogStream", "logs:PutLogEvents"),
				pairs(streamID+".Arn", "kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:ListShards"),
				pairs(streamKey+".Arn", "kms:Decrypt"),
				pairs(checkpointsID+".Arn", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:UpdateItem"),
				pairs(dlqID+".Arn", "sqs:SendMessage"),
				pairs(deadID+".Arn", "sqs:SendMessage"),
				pairs(opsKey+".Arn", "kms:Decrypt", "kms:GenerateDataKey"),
			}
			if name == config.ConsumerLastLocation {
				want = append(want, pairs(tableID+".Arn", "dynamodb:GetItem", "dynamodb:UpdateItem"))
			}
			equalStrings(t, name+" role", v.grants(t, roleID), sortedConcat(want...))
			wantEq(t, name+" trust", get(props(role), "AssumeRolePolicyDocument", "Statement", 0, "Principal"), map[string]any{"Service": "lambda.amazonaws.com"})
		}
	})

	t.Run("ConsumerFunctions", func(t *testing.T) {
		tableID, _ := v.byPath(t, "LocationsTable/Resource")
		checkpointsID, _ := v.byPath(t, "CheckpointTable/Resource")
		for _, name := range v.cfg.ConsumerNames() {
			id := consumerID(name)
			_, fn := v.byPath(t, id+"Function/Resource")
			deadID, _ := v.byPath(t, id+"DeadLetters/Resource")
			p := props(fn)
			logsID, logs := v.byPath(t, id+"Logs/Resource")
			roleID, _ := v.byPath(t, id+"Role/Resource")
			policyID, _ := v.byPath(t, id+"Policy/Resource")
			wantEq(t, name+" name", p["FunctionName"], "nsqk-"+name)
			wantEq(t, name+" runtime", p["Runtime"], "provided.al2023")
			wantEq(t, name+" arch", p["Architectures"], []any{"arm64"})
			wantEq(t, name+" handler", p["Handler"], "bootstrap")
			wantEq(t, name+" role", ref(p["Role"]), roleID+".Arn")
			wantEq(t, name+" log group", get(p, "LoggingConfig", "LogGroup"), map[string]any{"Ref": logsID})
			wantEq(t, name+" log retention", props(logs)["RetentionInDays"], 30)
			if !strings.Contains(ref(fn["DependsOn"]), policyID) {
				t.Errorf("%s: function does not depend on its policy: %v", name, fn["DependsOn"])
			}
			wantEnv := map[string]any{
				"NSQK_CHECKPOINT_TABLE":       map[string]any{"Ref": checkpointsID},
				"NSQK_DEAD_LETTER_QUEUE_URL":  map[string]any{"Ref": deadID},
				"NSQK_STREAM_RETENTION_HOURS": "24",
			}
			if name == config.ConsumerLastLocation {
				wantEnv["NSQK_LOCATIONS_TABLE"] = map[string]any{"Ref": tableID}
			}
			wantEq(t, name+" environment", p["Environment"], map[string]any{"Variables": wantEnv})
		}
		_, mon := v.byPath(t, "MonitorFunction/Resource")
		wantEq(t, "monitor memory", props(mon)["MemorySize"], 128)
		wantEq(t, "monitor timeout", props(mon)["Timeout"], 30)
		_, ll := v.byPath(t, "LastLocationFunction/Resource")
		wantEq(t, "lastlocation memory", props(ll)["MemorySize"], 256)
		wantEq(t, "lastlocation timeout", props(ll)["Timeout"], 60)
	})

	t.Run("EventSourceMappings", func(t *testing.T) {
		streamID, _ := v.one(t, "AWS::Kinesis::Stream")
		want := map[string]map[string]any{
			config.ConsumerMonitor:      {"StartingPosition": "LATEST", "MaximumRetryAttempts": 2, "MaximumRecordAgeInSeconds": 600},
			config.ConsumerLastLocation: {"StartingPosition": "TRIM_HORIZON", "MaximumRetryAttempts": 5, "MaximumRecordAgeInSeconds": 3600},
		}
		for _, name := range v.cfg.ConsumerNames() {
			id := consumerID(name)
			mid, m := v.byPath(t, id+"Mapping")
			fnID, _ := v.byPath(t, id+"Function/Resource")
			dlqID, _ := v.byPath(t, id+"Dlq/Resource")
			policyID, _ := v.byPath(t, id+"Policy/Resource")
			exp := map[string]any{
				"BatchSize":                      100,
				"BisectBatchOnFunctionError":     true,
				"DestinationConfig":              map[string]any{"OnFailure": map[string]any{"Destination": map[string]any{"Fn::GetAtt": []any{dlqID, "Arn"}}}},
				"Enabled":                        true,
				"EventSourceArn":                 map[string]any{"Fn::GetAtt": []any{streamID, "Arn"}},
				"FunctionName":                   map[string]any{"Ref": fnID},
				"FunctionResponseTypes":          []any{"ReportBatchItemFailures"},
				"MaximumBatchingWindowInSeconds": 0,
				"ParallelizationFactor":          1,
			}
			for k, val := range want[name] {
				exp[k] = val
			}
			got := props(m)
			delete(got, "Tags")
			wantEq(t, mid, got, exp)
			wantEq(t, mid+" depends on the policy", m["DependsOn"], []any{policyID})
		}
	})

	t.Run("DeadLetterQueues", func(t *testing.T) {
		opsKey, _ := v.byPath(t, "OpsKey/Resource")
		for _, path := range []string{"MonitorDlq", "MonitorDeadLetters", "LastLocationDlq", "LastLocationDeadLetters"} {
			name := path
			dlqID, dlq := v.byPath(t, path+"/Resource")
			wantEq(t, name+" dlq kms", props(dlq)["KmsMasterKeyId"], map[string]any{"Fn::GetAtt": []any{opsKey, "Arn"}})
			wantEq(t, name+" dlq retention", props(dlq)["MessageRetentionPeriod"], 1209600)
			wantEq(t, name+" dlq deletion", dlq["DeletionPolicy"], "Retain")
			must(t, name+" dlq is SSL-only", func() {
				v.template.HasResourceProperties(jsii.String("AWS::SQS::QueuePolicy"), map[string]any{
					"Queues": []any{map[string]any{"Ref": dlqID}},
					"PolicyDocument": map[string]any{"Statement": []any{map[string]any{
						"Action": "sqs:*", "Effect": "Deny", "Principal": map[string]any{"AWS": "*"},
						"Condition": map[string]any{"Bool": map[string]any{"aws:SecureTransport": "false"}},
					}}},
				})
			})
		}
	})

	t.Run("LocationsTable", func(t *testing.T) {
		must(t, "table", func() {
			v.template.HasResource(jsii.String("AWS::DynamoDB::Table"), map[string]any{
				"Properties": map[string]any{
					"BillingMode":                      "PAY_PER_REQUEST",
					"KeySchema":                        []any{map[string]any{"AttributeName": "user_id", "KeyType": "HASH"}},
					"AttributeDefinitions":             []any{map[string]any{"AttributeName": "user_id", "AttributeType": "S"}},
					"PointInTimeRecoverySpecification": map[string]any{"PointInTimeRecoveryEnabled": true},
					"SSESpecification":                 map[string]any{"SSEEnabled": true},
					"DeletionProtectionEnabled":        true,
				},
				"DeletionPolicy": "Retain",
			})
		})
	})

	t.Run("CheckpointTable", func(t *testing.T) {
		_, table := v.byPath(t, "CheckpointTable/Resource")
		p := props(table)
		wantEq(t, "key", p["KeySchema"], []any{map[string]any{"AttributeName": "id", "KeyType": "HASH"}})
		wantEq(t, "attributes", p["AttributeDefinitions"], []any{map[string]any{"AttributeName": "id", "AttributeType": "S"}})
		wantEq(t, "on demand", p["BillingMode"], "PAY_PER_REQUEST")
		wantEq(t, "ttl", p["TimeToLiveSpecification"], map[string]any{"AttributeName": "ttl", "Enabled": true})
		wantEq(t, "encrypted", p["SSESpecification"], map[string]any{"SSEEnabled": true})
		wantEq(t, "retained", table["DeletionPolicy"], "Retain")
		// Only the consumers may touch it, and only with the four calls of the checkpoint store.
		checkpointsID, _ := v.byPath(t, "CheckpointTable/Resource")
		var users []string
		for _, pol := range v.resources("AWS::IAM::Policy") {
			for _, st := range asList(get(props(pol), "PolicyDocument", "Statement")) {
				for _, r := range asList(get(st, "Resource")) {
					if ref(r) == checkpointsID+".Arn" {
						users = append(users, ref(asList(props(pol)["Roles"])[0]))
					}
				}
			}
		}
		sort.Strings(users)
		monRole, _ := v.byPath(t, "MonitorRole/Resource")
		llRole, _ := v.byPath(t, "LastLocationRole/Resource")
		want := []string{"Ref:" + llRole, "Ref:" + monRole}
		sort.Strings(want)
		wantEq(t, "roles granted on the checkpoint table", users, want)
	})

	t.Run("AlarmTopic", func(t *testing.T) {
		opsKey, _ := v.byPath(t, "OpsKey/Resource")
		must(t, "topic", func() {
			v.template.HasResourceProperties(jsii.String("AWS::SNS::Topic"), map[string]any{
				"KmsMasterKeyId": map[string]any{"Fn::GetAtt": []any{opsKey, "Arn"}},
			})
		})
		_, pol := v.one(t, "AWS::SNS::TopicPolicy")
		var sids []string
		for _, s := range asList(get(props(pol), "PolicyDocument", "Statement")) {
			if sid, ok := get(s, "Sid").(string); ok {
				sids = append(sids, sid)
			}
			if get(s, "Effect") == "Deny" {
				wantEq(t, "deny non-TLS publish", get(s, "Condition", "Bool", "aws:SecureTransport"), "false")
			}
		}
		sort.Strings(sids)
		wantEq(t, "topic policy statements", sids, []string{"AllowCloudWatchAlarmsToPublish", "AllowPublishThroughSSLOnly"})
		if n := len(v.resources("AWS::SNS::Subscription")); n != 0 {
			t.Errorf("no alarmEmail: want no subscriptions, got %d", n)
		}
	})

	t.Run("NetworkCreatedWithFlowLogs", func(t *testing.T) {
		must(t, "vpc", func() {
			v.template.HasResourceProperties(jsii.String("AWS::EC2::VPC"), map[string]any{"CidrBlock": "10.80.0.0/16"})
		})
		must(t, "flow log", func() {
			v.template.HasResourceProperties(jsii.String("AWS::EC2::FlowLog"), map[string]any{
				"ResourceType": "VPC", "TrafficType": "ALL", "LogDestinationType": "cloud-watch-logs",
			})
		})
		must(t, "s3 gateway endpoint", func() {
			v.template.HasResourceProperties(jsii.String("AWS::EC2::VPCEndpoint"), map[string]any{"VpcEndpointType": "Gateway"})
		})
		for _, svc := range []string{"kinesis-streams", "ecr.api", "ecr.dkr", "logs", "kms"} {
			found := false
			for _, ep := range v.resources("AWS::EC2::VPCEndpoint") {
				p := props(ep)
				if strings.HasSuffix(ref(p["ServiceName"]), "."+svc+`"]]}`) || strings.HasSuffix(ref(p["ServiceName"]), "."+svc) {
					found = true
					wantEq(t, svc+" interface", p["VpcEndpointType"], "Interface")
					wantEq(t, svc+" private DNS", p["PrivateDnsEnabled"], true)
					wantEq(t, svc+" subnets", len(asList(p["SubnetIds"])), 2)
					for _, sn := range asList(p["SubnetIds"]) {
						if !strings.Contains(ref(sn), "Vpcbridge") {
							t.Errorf("%s endpoint in a non-private subnet: %s", svc, ref(sn))
						}
					}
				}
			}
			if !found {
				t.Errorf("no interface endpoint for %s", svc)
			}
		}
		epSG, sg := v.byPath(t, "EndpointsSecurityGroup/Resource")
		wantEq(t, "endpoint ingress", props(sg)["SecurityGroupIngress"], []any{map[string]any{
			"CidrIp": "10.80.0.0/16", "Description": "HTTPS from the VPC",
			"FromPort": 443, "IpProtocol": "tcp", "ToPort": 443,
		}})
		for _, ep := range v.resources("AWS::EC2::VPCEndpoint") {
			if props(ep)["VpcEndpointType"] == "Interface" {
				wantEq(t, "endpoint security group", props(ep)["SecurityGroupIds"], []any{map[string]any{"Fn::GetAtt": []any{epSG, "GroupId"}}})
			}
		}
		// The endpoints carry only the bridge's calls on this stack's resources.
		streamID, _ := v.one(t, "AWS::Kinesis::Stream")
		streamKey, _ := v.byPath(t, "StreamKey/Resource")
		logsID, _ := v.byPath(t, "BridgeLogs/Resource")
		wantPolicies := map[string]any{
			"kinesis-streams": map[string]any{
				"Sid": "OnlyTheBridgeCallsOnThisStream", "Effect": "Allow", "Principal": map[string]any{"AWS": "*"},
				"Action":   []any{"kinesis:DescribeStreamSummary", "kinesis:ListShards", "kinesis:PutRecord", "kinesis:PutRecords"},
				"Resource": map[string]any{"Fn::GetAtt": []any{streamID, "Arn"}},
			},
			"logs": map[string]any{
				"Sid": "OnlyTheBridgeLogs", "Effect": "Allow", "Principal": map[string]any{"AWS": "*"},
				"Action":   []any{"logs:CreateLogStream", "logs:PutLogEvents"},
				"Resource": map[string]any{"Fn::GetAtt": []any{logsID, "Arn"}},
			},
			"kms": map[string]any{
				"Sid": "OnlyThisStacksKeys", "Effect": "Allow", "Principal": map[string]any{"AWS": "*"},
				"Action":   []any{"kms:Decrypt", "kms:GenerateDataKey"},
				"Resource": map[string]any{"Fn::GetAtt": []any{streamKey, "Arn"}},
			},
			"ecr.api": nil, "ecr.dkr": nil, "s3": nil,
		}
		checked := 0
		defer func() { wantEq(t, "endpoints with a checked policy", checked, len(wantPolicies)) }()
		for _, ep := range v.resources("AWS::EC2::VPCEndpoint") {
			name := ref(props(ep)["ServiceName"])
			for svc, want := range wantPolicies {
				if strings.Contains(name, "."+svc+`"`) || strings.HasSuffix(name, "."+svc) {
					checked++
					var got any
					if st := asList(get(props(ep), "PolicyDocument", "Statement")); len(st) > 0 {
						got = st[0]
						wantEq(t, svc+" endpoint statements", len(st), 1)
					}
					wantEq(t, svc+" endpoint policy", got, want)
				}
			}
		}
		must(t, "default SG restricted", func() {
			v.template.ResourceCountIs(jsii.String("Custom::VpcRestrictDefaultSG"), jsii.Number(1))
		})
	})

	t.Run("LogGroupsHaveRetention", func(t *testing.T) {
		for id, lg := range v.resources("AWS::Logs::LogGroup") {
			wantEq(t, id+" retention", props(lg)["RetentionInDays"], 30)
			wantEq(t, id+" deletion", lg["DeletionPolicy"], "Retain")
		}
	})

	t.Run("Alarms", func(t *testing.T) {
		checkAlarms(t, v, config.DefaultAlarmThresholds())
	})

	t.Run("Dashboard", func(t *testing.T) {
		_, d := v.one(t, "AWS::CloudWatch::Dashboard")
		wantEq(t, "name", props(d)["DashboardName"], "nsqk-flow")
		body := ref(props(d)["DashboardBody"])
		for _, s := range []string{
			"MessagesIn", "MessagesAcked", "DeadLettered", "NSQBacklog", "InFlightMessages", "AckLatency", // NSQ in
			"IncomingRecords", "WriteProvisionedThroughputExceeded", "PutRecordsFailedEntries", "Retries", // Kinesis in
			"GetRecords.Records", "GetRecords.IteratorAgeMilliseconds", "ReadProvisionedThroughputExceeded", // Kinesis out
			"IteratorAge", "Lag", "E2ELatency", "Records", "Failures", "OrderViolations", "Errors", "Throttles", // consumers
			"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage", "DeadLetteredRecords", // failed batches, dead letters
			"RunningTaskCount", "DesiredTaskCount", "CPUUtilization", // bridge
			"NSQDConnections", "NSQRdy", "ChannelOtherClients", "BacklogPollFailures", "SecondsSinceLastMessage", // bridge and nsqd
			"NSQK/Bridge", "NSQK/Consumer", "nsqk-monitor", "nsqk-lastlocation", "alarm",
		} {
			if !strings.Contains(body, s) {
				t.Errorf("dashboard does not show %s", s)
			}
		}
	})

	t.Run("Outputs", func(t *testing.T) {
		var got []string
		for k := range v.json["Outputs"].(map[string]any) {
			got = append(got, k)
		}
		sort.Strings(got)
		wantEq(t, "outputs", got, []string{
			"AlarmTopicArn", "BridgeClusterName", "BridgeLogGroup", "BridgeServiceName", "CheckpointTableName", "DashboardName",
			"LastLocationDeadLettersUrl", "LastLocationDlqUrl", "LastLocationFunctionName", "LastLocationLogGroup", "LocationsTableName",
			"MonitorDeadLettersUrl", "MonitorDlqUrl", "MonitorFunctionName", "MonitorLogGroup", "StreamArn", "StreamName",
		})
		streamID, _ := v.one(t, "AWS::Kinesis::Stream")
		wantEq(t, "stream name output", get(v.json, "Outputs", "StreamName", "Value"), map[string]any{"Ref": streamID})
	})

	t.Run("NagClean", func(t *testing.T) { checkNagClean(t, v) })

	t.Run("NagSuppressionsAreSpecific", func(t *testing.T) {
		wantEq(t, "suppressions", suppressions(t, v), []string{
			"nsqk/BridgeTask/ExecutionRole/DefaultPolicy/Resource AwsSolutions-IAM5 Resource::*",
			"nsqk/BridgeTask/ExecutionRole/Resource AwsSolutions-IAM5 Resource::*",
			"nsqk/BridgeTask/Resource AwsSolutions-ECS2 ",
			"nsqk/LastLocationDeadLetters/Resource AwsSolutions-SQS3 ",
			"nsqk/LastLocationDlq/Resource AwsSolutions-SQS3 ",
			"nsqk/MonitorDeadLetters/Resource AwsSolutions-SQS3 ",
			"nsqk/MonitorDlq/Resource AwsSolutions-SQS3 ",
			"nsqk/Stream/Resource AwsSolutions-KDS3 ",
		})
	})

	t.Run("ImageAssetIsTheBridgeSourcesOnly", func(t *testing.T) {
		checkImageAsset(t, v)
	})
}

// checkAlarms compares every alarm with the expected table.
func checkAlarms(t *testing.T, v *variant, th config.AlarmThresholds) {
	t.Helper()
	s := v.cfg.StackName
	topicID, _ := v.one(t, "AWS::SNS::Topic")
	type exp struct {
		namespace, metric, stat string
		period                  int
		threshold               float64
		evals, dps              int
		missing                 string
	}
	want := map[string]exp{
		s + "-stream-write-throttled":           {"AWS/Kinesis", "WriteProvisionedThroughputExceeded", "Sum", 60, th.StreamWriteThrottledRecords, 5, 3, "notBreaching"},
		s + "-stream-iterator-age":              {"AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds", "Maximum", 60, th.StreamIteratorAgeMs, 5, 3, "notBreaching"},
		s + "-bridge-putrecords-failed-entries": {"NSQK/Bridge", "PutRecordsFailedEntries", "Sum", 60, th.PutRecordsFailedEntries, 5, 3, "notBreaching"},
		s + "-bridge-tasks-below-desired":       {"", "", "", 60, th.BridgeTasksBelowDesired, 5, 5, "breaching"},
		s + "-bridge-dead-lettered":             {"NSQK/Bridge", "DeadLettered", "Sum", 300, th.BridgeDeadLettered, 1, 1, "notBreaching"},
		s + "-bridge-ack-latency-p99":           {"NSQK/Bridge", "AckLatency", "p99", 60, th.BridgeAckLatencyP99Ms, 5, 3, "notBreaching"},
		s + "-bridge-nsq-backlog":               {"NSQK/Bridge", "NSQBacklog", "Maximum", 60, th.BridgeNSQBacklog, 5, 5, "notBreaching"},
		s + "-monitor-order-violations":         {"NSQK/Consumer", "OrderViolations", "Sum", 300, th.MonitorOrderViolations, 1, 1, "notBreaching"},
		s + "-bridge-stalled":                   {"", "", "", 60, 1, 10, 10, "breaching"},
		s + "-bridge-late-window-evicted":       {"NSQK/Bridge", "LateWindowEvicted", "Sum", 300, 1, 1, 1, "notBreaching"},
		s + "-bridge-written-evicted":           {"NSQK/Bridge", "WrittenEvicted", "Sum", 300, 1, 1, 1, "notBreaching"},
	}
	if v.cfg.Bridge.MaxCount == 1 {
		want[s+"-bridge-channel-shared"] = exp{"NSQK/Bridge", "ChannelOtherClients", "Maximum", 60, 1, 5, 3, "notBreaching"}
	}
	// The math-expression alarms: their expression and the metrics it reads.
	mathAlarms := map[string]struct {
		expr    string
		metrics []string
	}{
		s + "-bridge-tasks-below-desired": {"desired - running", []string{"ECS/ContainerInsights/DesiredTaskCount", "ECS/ContainerInsights/RunningTaskCount"}},
		s + "-bridge-stalled":             {BridgeStalledExpression, []string{"NSQK/Bridge/MessagesIn", "NSQK/Bridge/NSQBacklog", "NSQK/Bridge/NSQDConnections"}},
	}
	s3 := v.cfg.OnFailure.Destination == config.OnFailureS3
	if s3 {
		want[s+"-failed-batches-stored"] = exp{"AWS/S3", "PutRequests", "Sum", 300, th.FailedBatchesStored, 1, 1, "notBreaching"}
	}
	for _, c := range v.cfg.ConsumerNames() {
		want[s+"-lambda-errors-"+c] = exp{"AWS/Lambda", "Errors", "Sum", 300, th.LambdaErrors, 1, 1, "notBreaching"}
		want[s+"-lambda-throttles-"+c] = exp{"AWS/Lambda", "Throttles", "Sum", 60, th.LambdaThrottles, 5, 3, "notBreaching"}
		want[s+"-lambda-iterator-age-"+c] = exp{"AWS/Lambda", "IteratorAge", "Maximum", 60, th.LambdaIteratorAgeMs, 5, 3, "notBreaching"}
		want[s+"-dead-letters-visible-"+c] = exp{"AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum", 300, th.DeadLetterQueueVisible, 1, 1, "notBreaching"}
		want[s+"-dead-lettered-records-"+c] = exp{"NSQK/Consumer", "DeadLetteredRecords", "Sum", 300, th.DeadLetteredRecords, 1, 1, "notBreaching"}
		if !s3 {
			want[s+"-dlq-messages-visible-"+c] = exp{"AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum", 300, th.DLQMessagesVisible, 1, 1, "notBreaching"}
			want[s+"-dlq-records-expiring-"+c] = exp{"AWS/SQS", "ApproximateAgeOfOldestMessage", "Maximum", 300, v.cfg.ExpiryWarning().Seconds(), 1, 1, "notBreaching"}
		}
	}
	alarms := v.resources("AWS::CloudWatch::Alarm")
	if len(alarms) != len(want) {
		t.Errorf("want %d alarms, got %d", len(want), len(alarms))
	}
	seen := map[string]bool{}
	for id, a := range alarms {
		p := props(a)
		name, _ := p["AlarmName"].(string)
		e, ok := want[name]
		if !ok {
			t.Errorf("unexpected alarm %s (%s)", name, id)
			continue
		}
		seen[name] = true
		wantEq(t, name+" threshold", p["Threshold"], e.threshold)
		wantEq(t, name+" comparison", p["ComparisonOperator"], "GreaterThanOrEqualToThreshold")
		wantEq(t, name+" evaluation periods", p["EvaluationPeriods"], e.evals)
		wantEq(t, name+" datapoints", p["DatapointsToAlarm"], e.dps)
		wantEq(t, name+" missing data", p["TreatMissingData"], e.missing)
		wantEq(t, name+" alarm action", p["AlarmActions"], []any{map[string]any{"Ref": topicID}})
		wantEq(t, name+" ok action", p["OKActions"], []any{map[string]any{"Ref": topicID}})
		if d, _ := p["AlarmDescription"].(string); !strings.Contains(d, "First check:") || !strings.Contains(d, "Runbook") {
			t.Errorf("%s: description lacks the first check / runbook pointer: %q", name, d)
		}
		if e.metric == "" { // the math expression
			var exprs, metrics []string
			for _, m := range asList(p["Metrics"]) {
				if x, ok := get(m, "Expression").(string); ok {
					exprs = append(exprs, x)
					wantEq(t, name+" expression period", get(m, "Period"), nil)
				} else {
					metrics = append(metrics, get(m, "MetricStat", "Metric", "Namespace").(string)+"/"+get(m, "MetricStat", "Metric", "MetricName").(string))
					wantEq(t, name+" metric period", get(m, "MetricStat", "Period"), e.period)
				}
			}
			sort.Strings(metrics)
			wantEq(t, name+" expression", exprs, []string{mathAlarms[name].expr})
			wantEq(t, name+" metrics", metrics, mathAlarms[name].metrics)
			continue
		}
		wantEq(t, name+" namespace", p["Namespace"], e.namespace)
		wantEq(t, name+" metric", p["MetricName"], e.metric)
		wantEq(t, name+" period", p["Period"], e.period)
		if strings.HasPrefix(e.stat, "p") {
			wantEq(t, name+" percentile", p["ExtendedStatistic"], e.stat)
		} else {
			wantEq(t, name+" statistic", p["Statistic"], e.stat)
		}
		dims := map[string]string{}
		for _, d := range asList(p["Dimensions"]) {
			dims[get(d, "Name").(string)] = ref(get(d, "Value"))
		}
		switch e.namespace {
		case "NSQK/Bridge":
			wantEq(t, name+" dimensions", dims, map[string]string{"Stream": v.cfg.Stream.Name})
		case "NSQK/Consumer":
			fn := v.cfg.FunctionName(config.ConsumerMonitor)
			if c, ok := strings.CutPrefix(name, s+"-dead-lettered-records-"); ok {
				fn = v.cfg.FunctionName(c)
			}
			wantEq(t, name+" dimensions", dims, map[string]string{"Function": fn})
		case "AWS/S3":
			bucketID, _ := v.byPath(t, "FailedBatches/Resource")
			wantEq(t, name+" dimensions", dims, map[string]string{"BucketName": "Ref:" + bucketID, "FilterId": "FailedBatches"})
		case "AWS/Kinesis":
			streamID, _ := v.one(t, "AWS::Kinesis::Stream")
			wantEq(t, name+" dimensions", dims, map[string]string{"StreamName": "Ref:" + streamID})
		case "AWS/Lambda":
			if len(dims) != 1 || !strings.HasPrefix(dims["FunctionName"], "Ref:") {
				t.Errorf("%s dimensions: %v", name, dims)
			}
		case "AWS/SQS":
			if len(dims) != 1 || !strings.HasSuffix(dims["QueueName"], ".QueueName") {
				t.Errorf("%s dimensions: %v", name, dims)
			}
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("missing alarm %s", name)
		}
	}
}

// checkNagClean: no unsuppressed AwsSolutions error or warning anywhere in the stack.
func checkNagClean(t *testing.T, v *variant) {
	t.Helper()
	rx := assertions.Match_StringLikeRegexp(jsii.String("AwsSolutions-.*"))
	var errs, warns int
	must(t, "nag findings", func() {
		for _, m := range *v.annots.FindError(jsii.String("*"), rx) {
			t.Errorf("nag error at %s: %v", *m.Id, m.Entry.Data)
			errs++
		}
		for _, m := range *v.annots.FindWarning(jsii.String("*"), rx) {
			t.Errorf("nag warning at %s: %v", *m.Id, m.Entry.Data)
			warns++
		}
	})
	if errs+warns > 0 {
		t.Fatalf("%d nag errors, %d nag warnings", errs, warns)
	}
}

// checkImageAsset: the bridge image's staged build context holds only the bridge's sources
// (go.mod, go.sum, functions/bridge, shared/ without tests), honours .dockerignore, and is small.
func checkImageAsset(t *testing.T, v *variant) {
	t.Helper()
	var ctxDir string
	entries, err := os.ReadDir(v.outdir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "asset.") {
			if _, err := os.Stat(filepath.Join(v.outdir, e.Name(), "functions", "bridge", "Dockerfile")); err == nil {
				ctxDir = filepath.Join(v.outdir, e.Name())
			}
		}
	}
	if ctxDir == "" {
		t.Fatal("no staged image asset with functions/bridge/Dockerfile")
	}
	for _, p := range []string{"go.mod", "go.sum", ".dockerignore"} {
		if _, err := os.Stat(filepath.Join(ctxDir, p)); err != nil {
			t.Errorf("build context lacks %s", p)
		}
	}
	var size int64
	var files []string
	_ = filepath.WalkDir(ctxDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(ctxDir, p)
		rel = filepath.ToSlash(rel)
		files = append(files, rel)
		if info, err := d.Info(); err == nil {
			size += info.Size()
		}
		switch {
		case rel == ".dockerignore" || rel == "go.mod" || rel == "go.sum" || rel == "functions/bridge/Dockerfile":
		case strings.HasPrefix(rel, "functions/bridge/") || strings.HasPrefix(rel, "shared/") || strings.HasPrefix(rel, "third_party/"):
			if strings.HasSuffix(rel, "_test.go") || strings.Contains(rel, "/testdata/") || strings.HasSuffix(rel, ".test") {
				t.Errorf("build context holds test material: %s", rel)
			}
		default:
			t.Errorf("build context holds %s: only go.mod, go.sum, functions/bridge, shared and third_party belong there", rel)
		}
		return nil
	})
	if !slices.Contains(files, "functions/bridge/main.go") {
		t.Errorf("build context lacks functions/bridge/main.go: %v", files)
	}
	t.Logf("image build context: %d files, %d KiB", len(files), size/1024)
	if size > 20<<20 {
		t.Errorf("image build context is %d MiB: something large is not ignored", size>>20)
	}
}

// TestBridgeImportsStayInsideTheImageContext guards BridgeImageExcludes: every package of this
// module that the bridge binary is built from lies in functions/bridge or shared/ (the only
// directories the image build context keeps), and none embeds files from test data.
func TestBridgeImportsStayInsideTheImageContext(t *testing.T) {
	out, err := exec.Command("go", "list", "-C", repoRoot(t), "-deps",
		"-f", "{{if .Module}}{{if .Module.Main}}{{.ImportPath}}|{{join .EmbedFiles \",\"}}{{end}}{{end}}",
		"./functions/bridge").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	var pkgs []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, embeds, _ := strings.Cut(line, "|")
		rel := strings.TrimPrefix(pkg, "github.com/nsqk/nsqk/")
		pkgs = append(pkgs, rel)
		if rel != "functions/bridge" && !strings.HasPrefix(rel, "shared/") {
			t.Errorf("the bridge imports %s, which the image build context excludes (update BridgeImageExcludes)", pkg)
		}
		if strings.Contains(embeds, "testdata") {
			t.Errorf("%s embeds test data (%s), which the image build context excludes", pkg, embeds)
		}
	}
	if !slices.Contains(pkgs, "functions/bridge") {
		t.Fatalf("go list found no bridge package: %q", out)
	}
	// Modules replaced by a local directory are part of the build too: they must be in third_party/.
	out, err = exec.Command("go", "list", "-C", repoRoot(t), "-deps", "-f",
		"{{with .Module}}{{with .Replace}}{{.Path}}{{end}}{{end}}", "./functions/bridge").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dir := range strings.Fields(string(out)) {
		if strings.HasPrefix(dir, ".") && !strings.HasPrefix(dir, "./third_party/") {
			t.Errorf("the bridge builds with the local module %s, which the image build context excludes", dir)
		}
	}
}

// ---------------------------------------------------------------------------------------------
// The "prod" variant: every optional path.

func TestProdStack(t *testing.T) {
	v := prodVariant(t)

	t.Run("EnvironmentSpecific", func(t *testing.T) {
		wantEq(t, "account", *v.stack.Account(), "123456789012")
		wantEq(t, "region", *v.stack.Region(), "eu-west-1")
	})

	t.Run("OnDemandStream", func(t *testing.T) {
		_, s := v.one(t, "AWS::Kinesis::Stream")
		p := props(s)
		wantEq(t, "mode", p["StreamModeDetails"], map[string]any{"StreamMode": "ON_DEMAND"})
		wantEq(t, "no shard count", p["ShardCount"], nil)
		wantEq(t, "retention", p["RetentionPeriodHours"], 168)
		wantEq(t, "name", p["Name"], "prod-locations")
		wantEq(t, "destroy", s["DeletionPolicy"], "Delete")
	})

	t.Run("ImportedVpc", func(t *testing.T) {
		for _, typ := range []string{"AWS::EC2::VPC", "AWS::EC2::Subnet", "AWS::EC2::NatGateway", "AWS::EC2::FlowLog", "Custom::VpcRestrictDefaultSG"} {
			if n := len(v.resources(typ)); n != 0 {
				t.Errorf("imported VPC: %d %s created", n, typ)
			}
		}
		_, svc := v.one(t, "AWS::ECS::Service")
		wantEq(t, "subnets", get(props(svc), "NetworkConfiguration", "AwsvpcConfiguration", "Subnets"),
			[]any{"subnet-0aaaaaaaaaaaaaaa1", "subnet-0aaaaaaaaaaaaaaa2", "subnet-0aaaaaaaaaaaaaaa3"})
		_, sg := v.one(t, "AWS::EC2::SecurityGroup")
		wantEq(t, "sg vpc", props(sg)["VpcId"], "vpc-0123456789abcdef0")
		wantEq(t, "outbound: HTTPS and the configured nsqd ports", egressPorts(sg), []string{"0.0.0.0/0 tcp 4150", "0.0.0.0/0 tcp 4151", "0.0.0.0/0 tcp 443"})
		if n := len(v.resources("AWS::EC2::VPCEndpoint")); n != 0 {
			t.Errorf("imported VPC: %d endpoints created", n)
		}
	})

	t.Run("BridgeSettings", func(t *testing.T) {
		_, td := v.one(t, "AWS::ECS::TaskDefinition")
		c := get(props(td), "ContainerDefinitions", 0)
		env := map[string]string{}
		for _, e := range asList(get(c, "Environment")) {
			env[get(e, "Name").(string)] = ref(get(e, "Value"))
		}
		for k, want := range map[string]string{
			"NSQK_NSQD_TCP_ADDRESS":  "nsqd-0.prod:4150,nsqd-1.prod:4150",
			"NSQK_NSQD_HTTP_ADDRESS": "nsqd-0.prod:4151,nsqd-1.prod:4151",
			"NSQK_ORDERING":          "strict",
			"NSQK_MAX_ATTEMPTS":      "10",
			"NSQK_TLS":               "true",
			"NSQK_MAX_IN_FLIGHT":     "2000",
			"NSQK_KEY_BUCKETS":       "8",
			"NSQK_TOPIC":             "positions",
			"NSQK_CHANNEL":           "kinesis",
			"NSQK_DEAD_LETTER_TOPIC": "positions-dlq",
			"NSQK_SHUTDOWN_TIMEOUT":  "1m0s",
		} {
			wantEq(t, k, env[k], want)
		}
		wantEq(t, "environment size (12 managed + 3 optional + 2 extra)", len(env), 17)
		if _, ok := env["NSQK_LOOKUPD_HTTP_ADDRESS"]; ok {
			t.Error("lookupd address set although nsqd addresses are configured")
		}
		if _, ok := env["NSQK_AUTH_SECRET"]; ok {
			t.Error("the auth secret must not be a plain environment variable")
		}
		wantEq(t, "secrets", get(c, "Secrets"), []any{map[string]any{"Name": "NSQK_AUTH_SECRET", "ValueFrom": prodSecretArn}})
		wantEq(t, "stop timeout", get(c, "StopTimeout"), 75)
		wantEq(t, "cpu", props(td)["Cpu"], "1024")
		wantEq(t, "memory", props(td)["Memory"], "2048")

		_, svc := v.one(t, "AWS::ECS::Service")
		wantEq(t, "desired count", props(svc)["DesiredCount"], 2)
		wantEq(t, "rolling deployment with several tasks", get(props(svc), "DeploymentConfiguration", "MaximumPercent"), 200)
		must(t, "scaling bounds", func() {
			v.template.HasResourceProperties(jsii.String("AWS::ApplicationAutoScaling::ScalableTarget"), map[string]any{"MinCapacity": 2, "MaxCapacity": 6})
		})
		must(t, "cpu target", func() {
			v.template.HasResourceProperties(jsii.String("AWS::ApplicationAutoScaling::ScalingPolicy"), map[string]any{
				"TargetTrackingScalingPolicyConfiguration": assertions.Match_ObjectLike(&map[string]any{"TargetValue": 50}),
			})
		})
	})

	t.Run("ExecutionRoleReadsOnlyTheAuthSecret", func(t *testing.T) {
		roleID, _ := v.byPath(t, "BridgeTask/ExecutionRole/Resource")
		got := v.grants(t, roleID)
		var secretGrants []string
		for _, g := range got {
			if strings.HasPrefix(g, "secretsmanager:") || strings.HasPrefix(g, "kms:") {
				secretGrants = append(secretGrants, g)
			}
		}
		equalStrings(t, "secret access", secretGrants, sortedConcat(
			pairs(prodSecretKey, "kms:Decrypt"),
			pairs(prodSecretArn, "secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"),
		))
		_, pol := v.byPath(t, "BridgeTask/ExecutionRole/DefaultPolicy/Resource")
		for _, s := range asList(get(props(pol), "PolicyDocument", "Statement")) {
			if get(s, "Sid") == "DecryptTheNsqAuthSecret" {
				wantEq(t, "via secrets manager only", get(s, "Condition"), map[string]any{
					"StringEquals": map[string]any{"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"},
				})
			}
		}
	})

	t.Run("EnhancedFanOut", func(t *testing.T) {
		streamID, _ := v.one(t, "AWS::Kinesis::Stream")
		consumerIDL, sc := v.one(t, "AWS::Kinesis::StreamConsumer")
		delete(props(sc), "Tags")
		wantEq(t, "consumer", props(sc), map[string]any{
			"ConsumerName": "nsqk-prod-lastlocation",
			"StreamARN":    map[string]any{"Fn::GetAtt": []any{streamID, "Arn"}},
		})
		_, m := v.byPath(t, "LastLocationMapping")
		wantEq(t, "mapping reads the consumer", props(m)["EventSourceArn"], map[string]any{"Fn::GetAtt": []any{consumerIDL, "ConsumerARN"}})
		roleID, _ := v.byPath(t, "LastLocationRole/Resource")
		got := v.grants(t, roleID)
		for _, w := range pairs(consumerIDL+".ConsumerARN", "kinesis:DescribeStreamConsumer", "kinesis:SubscribeToShard") {
			if !strings.Contains(strings.Join(got, "\n"), w) {
				t.Errorf("lastlocation role lacks %s", w)
			}
		}
		wantEq(t, "grant count (5 stream + 2 fan-out + logs 2 + kms 1 + checkpoints 3 + sqs 2 + queue kms 2 + table 2)", len(got), 19)
		monRole, _ := v.byPath(t, "MonitorRole/Resource")
		for _, g := range v.grants(t, monRole) {
			if strings.Contains(g, "SubscribeToShard") {
				t.Errorf("monitor does not use fan-out but has %s", g)
			}
		}
	})

	t.Run("MappingSettings", func(t *testing.T) {
		_, mon := v.byPath(t, "MonitorMapping")
		p := props(mon)
		wantEq(t, "monitor disabled", p["Enabled"], false)
		wantEq(t, "monitor AT_TIMESTAMP", p["StartingPosition"], "AT_TIMESTAMP")
		wantEq(t, "monitor timestamp", p["StartingPositionTimestamp"], prodTimestamp)
		wantEq(t, "monitor batch", p["BatchSize"], 50)
		wantEq(t, "monitor window", p["MaximumBatchingWindowInSeconds"], 1)
		_, ll := v.byPath(t, "LastLocationMapping")
		p = props(ll)
		wantEq(t, "lastlocation batch", p["BatchSize"], 1000)
		wantEq(t, "lastlocation window", p["MaximumBatchingWindowInSeconds"], 5)
		wantEq(t, "lastlocation parallelization", p["ParallelizationFactor"], 8)
		wantEq(t, "lastlocation retries", p["MaximumRetryAttempts"], 100)
		wantEq(t, "lastlocation record age", p["MaximumRecordAgeInSeconds"], 86400)
		wantEq(t, "lastlocation no timestamp", p["StartingPositionTimestamp"], nil)
		wantEq(t, "bisect", p["BisectBatchOnFunctionError"], true)
		wantEq(t, "report item failures", p["FunctionResponseTypes"], []any{"ReportBatchItemFailures"})
		_, fn := v.byPath(t, "LastLocationFunction/Resource")
		wantEq(t, "memory", props(fn)["MemorySize"], 512)
		wantEq(t, "timeout", props(fn)["Timeout"], 120)
		wantEq(t, "function name", props(fn)["FunctionName"], "nsqk-prod-lastlocation")
	})

	t.Run("AlarmEmails", func(t *testing.T) {
		topicID, _ := v.one(t, "AWS::SNS::Topic")
		var got []string
		for _, s := range v.resources("AWS::SNS::Subscription") {
			wantEq(t, "protocol", props(s)["Protocol"], "email")
			wantEq(t, "topic", props(s)["TopicArn"], map[string]any{"Ref": topicID})
			got = append(got, props(s)["Endpoint"].(string))
		}
		sort.Strings(got)
		wantEq(t, "endpoints", got, []string{"oncall@example.com", "ops@example.com"})
	})

	t.Run("DestroyPolicyEverywhere", func(t *testing.T) {
		for _, typ := range []string{"AWS::Kinesis::Stream", "AWS::KMS::Key", "AWS::DynamoDB::Table", "AWS::SQS::Queue", "AWS::Logs::LogGroup"} {
			for id, r := range v.resources(typ) {
				wantEq(t, id+" deletion policy", r["DeletionPolicy"], "Delete")
			}
		}
		for id, table := range v.resources("AWS::DynamoDB::Table") {
			wantEq(t, id+" deletion protection", props(table)["DeletionProtectionEnabled"], false)
		}
		for id, lg := range v.resources("AWS::Logs::LogGroup") {
			wantEq(t, id+" retention", props(lg)["RetentionInDays"], 90)
		}
	})

	t.Run("Alarms", func(t *testing.T) {
		th := config.DefaultAlarmThresholds()
		th.BridgeNSQBacklog = 50000
		th.LambdaIteratorAgeMs = 300000
		checkAlarms(t, v, th)
	})

	t.Run("NagClean", func(t *testing.T) { checkNagClean(t, v) })
}

// TestNagPackCatchesViolations is the control for the NagClean subtests: the same checks, applied
// the same way, do report a non-compliant resource.
func TestNagPackCatchesViolations(t *testing.T) {
	ctx := map[string]any{"@aws-cdk/core:annotationsInValidationReport": false}
	must(t, "control stack", func() {
		app := awscdk.NewApp(&awscdk.AppProps{Context: &ctx})
		st := awscdk.NewStack(app, jsii.String("Control"), nil)
		awssqs.NewQueue(st, jsii.String("Plain"), &awssqs.QueueProps{Encryption: awssqs.QueueEncryption_UNENCRYPTED})
		awscdk.Aspects_Of(app).Add(cdknag.NewAwsSolutionsChecks(nil), nil)
		found := assertions.Annotations_FromStack(st).FindError(jsii.String("*"), assertions.Match_StringLikeRegexp(jsii.String("AwsSolutions-SQS[24].*")))
		if len(*found) < 2 {
			t.Fatalf("want AwsSolutions-SQS2 and -SQS4 errors, got %d findings", len(*found))
		}
	})
}

// TestStackPropsValidation: missing Lambda code or Dockerfile is a clear error, not a jsii panic.
func TestStackPropsValidation(t *testing.T) {
	cfg, err := config.Parse(config.MapContext(map[string]any{config.KeyLookupdHTTP: "lookupd:4161", config.KeyTopic: "locations"}))
	if err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	_, err = NewNsqkStack(nil, "x", &NsqkStackProps{
		Config:           cfg,
		LambdaCodeDirs:   map[string]string{config.ConsumerMonitor: empty, config.ConsumerLastLocation: empty},
		BridgeImageDir:   repoRoot(t),
		BridgeDockerfile: "functions/bridge/Dockerfile",
	})
	if err == nil || !strings.Contains(err.Error(), "make lambda") {
		t.Errorf("missing bootstrap: %v", err)
	}
	if err := os.WriteFile(filepath.Join(empty, "bootstrap"), []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = NewNsqkStack(nil, "x", &NsqkStackProps{
		Config:           cfg,
		LambdaCodeDirs:   map[string]string{config.ConsumerMonitor: empty, config.ConsumerLastLocation: empty},
		BridgeImageDir:   repoRoot(t),
		BridgeDockerfile: "functions/nope/Dockerfile",
	})
	if err == nil || !strings.Contains(err.Error(), "Dockerfile") {
		t.Errorf("missing Dockerfile: %v", err)
	}
	if _, err := NewNsqkStack(nil, "x", &NsqkStackProps{}); err == nil {
		t.Error("nil config accepted")
	}
}

// egressPorts lists a security group's egress rules as "cidr protocol port".
func egressPorts(sg map[string]any) []string {
	var out []string
	for _, r := range asList(props(sg)["SecurityGroupEgress"]) {
		from, to := get(r, "FromPort"), get(r, "ToPort")
		port := fmt.Sprint(from)
		if fmt.Sprint(to) != port {
			port += "-" + fmt.Sprint(to)
		}
		out = append(out, fmt.Sprintf("%v %v %s", get(r, "CidrIp"), get(r, "IpProtocol"), port))
	}
	sort.Strings(out)
	return out
}

// suppressions lists every cdk-nag suppression as "path rule appliesTo", sorted, and fails a
// suppression whose reason is too short to say why it is right.
func suppressions(t *testing.T, v *variant) []string {
	t.Helper()
	var got []string
	for _, r := range v.json["Resources"].(map[string]any) {
		md, _ := r.(map[string]any)["Metadata"].(map[string]any)
		for _, s := range asList(get(md, "cdk_nag", "rules_to_suppress")) {
			reason, _ := get(s, "reason").(string)
			if len(reason) < 100 {
				t.Errorf("%s %v: reason too short to be specific: %q", md["aws:cdk:path"], get(s, "id"), reason)
			}
			var applies []string
			for _, a := range asList(get(s, "applies_to")) {
				if re, ok := get(a, "regex").(string); ok {
					a = "regex:" + re
				}
				applies = append(applies, ref(a))
			}
			got = append(got, fmt.Sprintf("%s %s %s", md["aws:cdk:path"], get(s, "id"), strings.Join(applies, ",")))
		}
	}
	sort.Strings(got)
	return got
}
