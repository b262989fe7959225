package stack

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsdynamodb"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/nsqk/nsqk/infra/config"
)

// NsqkStackProps are the inputs of the nsqk stack. Config comes from context (config.Load); the
// code locations are props so that tests do not depend on `make lambda` having run.
type NsqkStackProps struct {
	awscdk.StackProps
	Config *config.Config
	// LambdaCodeDirs maps each consumer name to a directory holding its `bootstrap` binary
	// (the app uses dist/<name>).
	LambdaCodeDirs map[string]string
	// BridgeImageDir is the Docker build context of the bridge image (the repository root).
	BridgeImageDir string
	// BridgeDockerfile is the Dockerfile path relative to BridgeImageDir.
	BridgeDockerfile string
}

// NsqkStack is the whole deployment: stream, bridge, consumers, monitoring.
type NsqkStack struct {
	awscdk.Stack
	Stream         *StreamResources   // the stream (without routes) or the first route's
	Streams        []*StreamResources // one per route (one without routes)
	Network        *Network
	Bridge         *Bridge
	Consumers      []*Consumer
	LocationsTable awsdynamodb.Table
	Checkpoints    awsdynamodb.Table
	FailedBatches  awss3.Bucket // the S3 on-failure destination; nil with the queues
	Archive        *Archive     // nil unless the archive is enabled
	Ops            *OpsResources
	Alarms         *Monitoring
}

// NewNsqkStack builds the stack. It validates the props first and returns an error (not a panic)
// for anything a user can get wrong.
func NewNsqkStack(scope constructs.Construct, id string, props *NsqkStackProps) (*NsqkStack, error) {
	if err := props.validate(); err != nil {
		return nil, err
	}
	cfg := props.Config
	sp := props.StackProps
	if sp.StackName == nil {
		sp.StackName = jsii.String(cfg.StackName)
	}
	if sp.Env == nil && (cfg.Account != "" || cfg.Region != "") {
		sp.Env = &awscdk.Environment{}
		if cfg.Account != "" {
			sp.Env.Account = jsii.String(cfg.Account)
		}
		if cfg.Region != "" {
			sp.Env.Region = jsii.String(cfg.Region)
		}
	}
	if sp.Description == nil {
		sp.Description = jsii.String(fmt.Sprintf("nsqk: NSQ topic %q -> Kinesis stream %q -> Lambda consumers, with alarms and a dashboard", cfg.NSQ.Topic, cfg.Stream.Name))
		if len(cfg.Routes) > 0 {
			sp.Description = jsii.String(fmt.Sprintf("nsqk: %d NSQ topics -> one Kinesis stream each -> Lambda consumers, with alarms and a dashboard", len(cfg.Routes)))
		}
	}
	stack := awscdk.NewStack(scope, jsii.String(id), &sp)
	awscdk.Tags_Of(stack).Add(jsii.String("project"), jsii.String("nsqk"), nil)
	awscdk.Tags_Of(stack).Add(jsii.String("nsqk:stack"), jsii.String(cfg.StackName), nil)

	s := &NsqkStack{Stack: stack}
	s.Streams = newStreams(stack, cfg)
	s.Stream = s.Streams[0]
	s.Ops = newOpsResources(stack, cfg)
	s.Network = newNetwork(stack, cfg)
	s.Bridge = newBridge(stack, cfg, s.Network, s.Streams, props.BridgeImageDir, props.BridgeDockerfile)
	s.Network.scopeEndpoints(cfg, s.Streams, s.Bridge)
	s.LocationsTable = newLocationsTable(stack, cfg)
	s.Checkpoints = newCheckpointTable(stack, cfg)
	if cfg.OnFailure.Destination == config.OnFailureS3 {
		s.FailedBatches = newFailedBatchesBucket(stack, cfg, s.Stream)
	}
	for _, cc := range cfg.Consumers {
		d := consumerDeps{cfg: cfg, stream: s.streamOf(cc.Route), ops: s.Ops, checkpoints: s.Checkpoints, failed: s.FailedBatches}
		if cc.Name == config.ConsumerLastLocation {
			d.locations = s.LocationsTable
		}
		s.Consumers = append(s.Consumers, newConsumer(stack, cc, props.LambdaCodeDirs[cc.Name], d))
	}
	if cfg.Archive.Enabled {
		s.Archive = newArchive(stack, cfg, s.Stream)
	}
	s.Alarms = newMonitoring(stack, cfg, s)
	s.addOutputs(cfg)
	return s, nil
}

// BridgeDockerfile is the bridge image's Dockerfile, relative to the repository root (the image's
// build context).
const BridgeDockerfile = "functions/bridge/Dockerfile"

// RepositoryProps are the props for a stack built from a checkout at root: the bridge image from
// its Dockerfile, each consumer's code from <lambdaDistDir>/<name> (`make lambda`).
func RepositoryProps(root string, cfg *config.Config) (*NsqkStackProps, error) {
	if _, err := os.Stat(filepath.Join(root, BridgeDockerfile)); err != nil {
		return nil, fmt.Errorf("run the CDK CLI from the repository root (where cdk.json is): %w", err)
	}
	dist := cfg.LambdaDistDir
	if !filepath.IsAbs(dist) {
		dist = filepath.Join(root, dist)
	}
	codeDirs := map[string]string{}
	for _, name := range cfg.ConsumerNames() {
		codeDirs[name] = filepath.Join(dist, name)
	}
	if err := config.CheckConsumerSources(root, cfg); err != nil {
		return nil, err
	}
	return &NsqkStackProps{Config: cfg, LambdaCodeDirs: codeDirs, BridgeImageDir: root, BridgeDockerfile: BridgeDockerfile}, nil
}

func (p *NsqkStackProps) validate() error {
	if p == nil || p.Config == nil {
		return fmt.Errorf("nsqk stack: Config is required")
	}
	for _, name := range p.Config.ConsumerNames() {
		dir, ok := p.LambdaCodeDirs[name]
		if !ok || dir == "" {
			return fmt.Errorf("nsqk stack: no code directory for consumer %q", name)
		}
		if st, err := os.Stat(filepath.Join(dir, "bootstrap")); err != nil || st.IsDir() {
			return fmt.Errorf("nsqk stack: %s has no bootstrap binary for consumer %q: run `make lambda` first", dir, name)
		}
	}
	if p.BridgeImageDir == "" || p.BridgeDockerfile == "" {
		return fmt.Errorf("nsqk stack: BridgeImageDir and BridgeDockerfile are required")
	}
	if _, err := os.Stat(filepath.Join(p.BridgeImageDir, p.BridgeDockerfile)); err != nil {
		return fmt.Errorf("nsqk stack: bridge Dockerfile: %w", err)
	}
	return nil
}

// addOutputs exports the names operators and tools need (aws cloudformation describe-stacks).
func (s *NsqkStack) addOutputs(cfg *config.Config) {
	out := func(id string, value *string, desc string) {
		awscdk.NewCfnOutput(s.Stack, jsii.String(id), &awscdk.CfnOutputProps{Value: value, Description: jsii.String(desc)})
	}
	if len(cfg.Routes) == 0 {
		out("StreamName", s.Stream.Stream.StreamName(), "Kinesis stream the bridge writes")
		out("StreamArn", s.Stream.Stream.StreamArn(), "Kinesis stream ARN")
	}
	for _, st := range s.Streams {
		if st.Route != nil {
			out("Route"+st.Route.ID+"StreamName", st.Stream.StreamName(), fmt.Sprintf("Kinesis stream of route %s (NSQ topic %s)", st.Route.Name, st.Route.Topic))
			out("Route"+st.Route.ID+"StreamArn", st.Stream.StreamArn(), fmt.Sprintf("Kinesis stream ARN of route %s", st.Route.Name))
		}
	}
	out("BridgeClusterName", s.Bridge.Cluster.ClusterName(), "ECS cluster of the bridge")
	if len(s.Bridge.Groups) == 1 {
		out("BridgeServiceName", s.Bridge.Service.ServiceName(), "ECS service of the bridge")
	} else {
		for _, g := range s.Bridge.Groups {
			out(fmt.Sprintf("BridgeGroup%dServiceName", g.Index), g.Service.ServiceName(), fmt.Sprintf("ECS service of bridge group %s", g.Partition))
		}
	}
	out("BridgeLogGroup", s.Bridge.LogGroup.LogGroupName(), "bridge logs and EMF metrics")
	out("LocationsTableName", s.LocationsTable.TableName(), "lastlocation's DynamoDB table")
	out("CheckpointTableName", s.Checkpoints.TableName(), "the consumers' checkpoints inside aggregated records")
	if s.FailedBatches != nil {
		out("FailedBatchesBucketName", s.FailedBatches.BucketName(), "on-failure destination of every consumer (whole failed batches)")
	}
	if s.Archive != nil {
		out("ArchiveBucketName", s.Archive.Bucket.BucketName(), "archive of every user record, by day")
		out("ArchiveDeliveryStreamName", s.Archive.Delivery.Ref(), "Firehose delivery stream writing the archive")
	}
	out("AlarmTopicArn", s.Ops.Topic.TopicArn(), "SNS topic of every alarm")
	out("DashboardName", s.Alarms.Dashboard.DashboardName(), "CloudWatch dashboard of the flow")
	for _, c := range s.Consumers {
		id := consumerID(c.Config.Name)
		out(id+"FunctionName", c.Function.FunctionName(), c.Config.Name+" Lambda function")
		out(id+"LogGroup", c.LogGroup.LogGroupName(), c.Config.Name+" logs and EMF metrics")
		if c.DLQ != nil {
			out(id+"DlqUrl", c.DLQ.QueueUrl(), c.Config.Name+" on-failure destination (failed batch ranges)")
		}
		out(id+"DeadLettersUrl", c.DeadLetters.QueueUrl(), c.Config.Name+" dead-letter queue (user records that failed permanently)")
	}
}

// streamOf returns the stream of the named route; the only stream without routes.
func (s *NsqkStack) streamOf(route string) *StreamResources {
	for _, st := range s.Streams {
		if st.Route != nil && st.Route.Name == route {
			return st
		}
	}
	return s.Stream
}

// removalPolicy maps the configured policy onto CDK's.
func removalPolicy(cfg *config.Config) awscdk.RemovalPolicy {
	if cfg.RemovalPolicy == config.RemovalDestroy {
		return awscdk.RemovalPolicy_DESTROY
	}
	return awscdk.RemovalPolicy_RETAIN
}
