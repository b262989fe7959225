package stack

import (
	"maps"
	"slices"

	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/nsqk/nsqk/infra/config"
)

// Network is the VPC the bridge runs in and the subnets it uses.
type Network struct {
	Vpc       awsec2.IVpc
	Subnets   *awsec2.SubnetSelection
	Endpoints map[string]awsec2.InterfaceVpcEndpoint // by service (InterfaceEndpointServices); none for an imported VPC
}

// newNetwork imports the VPC given in context (vpcId + vpcSubnetIds + vpcAvailabilityZones, no
// lookup: synth stays offline and deterministic) or creates one: public subnets for the NAT
// gateways, private subnets with egress for the bridge, an S3 gateway endpoint (ECR image layers
// without NAT data charges) and VPC flow logs to CloudWatch Logs.
func newNetwork(scope constructs.Construct, cfg *config.Config) *Network {
	n := cfg.Network
	if n.Imported() {
		vpc := awsec2.Vpc_FromVpcAttributes(scope, jsii.String("Vpc"), &awsec2.VpcAttributes{
			VpcId:             jsii.String(n.VpcID),
			AvailabilityZones: jsii.Strings(n.AvailabilityZones...),
			PrivateSubnetIds:  jsii.Strings(n.SubnetIDs...),
		})
		return &Network{Vpc: vpc, Subnets: &awsec2.SubnetSelection{Subnets: vpc.PrivateSubnets()}}
	}

	flowLogs := awslogs.NewLogGroup(scope, jsii.String("VpcFlowLogs"), &awslogs.LogGroupProps{
		Retention:     retentionDays(cfg.LogRetentionDays),
		RemovalPolicy: removalPolicy(cfg),
	})
	props := &awsec2.VpcProps{
		IpAddresses: awsec2.IpAddresses_Cidr(jsii.String(n.Cidr)),
		NatGateways: jsii.Number(float64(n.NatGateways)),
		SubnetConfiguration: &[]*awsec2.SubnetConfiguration{
			{Name: jsii.String("public"), SubnetType: awsec2.SubnetType_PUBLIC, CidrMask: jsii.Number(24)},
			{Name: jsii.String("bridge"), SubnetType: awsec2.SubnetType_PRIVATE_WITH_EGRESS, CidrMask: jsii.Number(22)},
		},
		RestrictDefaultSecurityGroup: jsii.Bool(true),
		GatewayEndpoints: &map[string]*awsec2.GatewayVpcEndpointOptions{
			"S3": {Service: awsec2.GatewayVpcEndpointAwsService_S3()},
		},
		FlowLogs: &map[string]*awsec2.FlowLogOptions{
			"All": {
				Destination: awsec2.FlowLogDestination_ToCloudWatchLogs(flowLogs, nil),
				TrafficType: awsec2.FlowLogTrafficType_ALL,
			},
		},
	}
	if len(n.AvailabilityZones) > 0 {
		props.AvailabilityZones = jsii.Strings(n.AvailabilityZones...)
	} else {
		props.MaxAzs = jsii.Number(float64(n.MaxAZs))
	}
	vpc := awsec2.NewVpc(scope, jsii.String("Vpc"), props)
	net := &Network{Vpc: vpc, Subnets: &awsec2.SubnetSelection{SubnetType: awsec2.SubnetType_PRIVATE_WITH_EGRESS}}
	if n.InterfaceEndpoints {
		net.addInterfaceEndpoints(scope, cfg)
	}
	return net
}

// InterfaceEndpointServices are the AWS APIs the bridge task reaches through interface endpoints
// in its own subnets instead of the NAT gateway: the stream, the image registry (API and layers;
// the layers themselves come through the S3 gateway endpoint), its logs, its secrets (only when
// the NSQ auth secret or TLS material come from Secrets Manager), and KMS.
var InterfaceEndpointServices = map[string]func() awsec2.InterfaceVpcEndpointAwsService{
	"Kinesis":        awsec2.InterfaceVpcEndpointAwsService_KINESIS_STREAMS,
	"EcrApi":         awsec2.InterfaceVpcEndpointAwsService_ECR,
	"EcrDocker":      awsec2.InterfaceVpcEndpointAwsService_ECR_DOCKER,
	"Logs":           awsec2.InterfaceVpcEndpointAwsService_CLOUDWATCH_LOGS,
	"SecretsManager": awsec2.InterfaceVpcEndpointAwsService_SECRETS_MANAGER,
	"Kms":            awsec2.InterfaceVpcEndpointAwsService_KMS,
}

// addInterfaceEndpoints creates the interface endpoints (private DNS on, so the SDK's default
// endpoints resolve to them) behind one security group open to HTTPS from the VPC only.
func (n *Network) addInterfaceEndpoints(scope constructs.Construct, cfg *config.Config) {
	sg := awsec2.NewSecurityGroup(scope, jsii.String("EndpointsSecurityGroup"), &awsec2.SecurityGroupProps{
		Vpc:              n.Vpc,
		Description:      jsii.String("nsqk interface endpoints: HTTPS from inside the VPC only"),
		AllowAllOutbound: jsii.Bool(false),
	})
	sg.AddIngressRule(awsec2.Peer_Ipv4(jsii.String(cfg.Network.Cidr)), awsec2.Port_Tcp(jsii.Number(443)), jsii.String("HTTPS from the VPC"), nil)
	n.Endpoints = map[string]awsec2.InterfaceVpcEndpoint{}
	for _, name := range slices.Sorted(maps.Keys(InterfaceEndpointServices)) {
		if name == "SecretsManager" && len(cfg.NSQ.SecretArns()) == 0 {
			continue // the bridge reads no secret: an endpoint would only cost
		}
		n.Endpoints[name] = n.Vpc.AddInterfaceEndpoint(jsii.String(name+"Endpoint"), &awsec2.InterfaceVpcEndpointOptions{
			Service:           InterfaceEndpointServices[name](),
			Subnets:           n.Subnets,
			SecurityGroups:    &[]awsec2.ISecurityGroup{sg},
			PrivateDnsEnabled: jsii.Bool(true),
			Open:              jsii.Bool(false),
		})
	}
}

// scopeEndpoints gives the endpoints whose services support endpoint policies a policy that admits
// only the calls this stack's bridge makes, on this stack's resources: nothing else in the VPC can
// use them to reach other streams, log groups, keys or secrets. (The ECR endpoints keep the default
// policy: image pulls go to the CDK bootstrap's repository, which this stack does not own.)
func (n *Network) scopeEndpoints(cfg *config.Config, streams []*StreamResources, b *Bridge) {
	st := streams[0]
	allow := func(name, sid string, actions []string, resources ...*string) {
		if ep, ok := n.Endpoints[name]; ok {
			ep.AddToPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
				Sid:        jsii.String(sid),
				Principals: &[]awsiam.IPrincipal{awsiam.NewAnyPrincipal()},
				Actions:    jsii.Strings(actions...),
				Resources:  &resources,
			}))
		}
	}
	allow("Kinesis", "OnlyTheBridgeCallsOnThisStream", BridgeTaskActions, streamArns(streams)...)
	allow("Logs", "OnlyTheBridgeLogs", ConsumerLogActions, b.LogGroup.LogGroupArn())
	keys := []*string{st.Key.KeyArn()}
	keys = append(keys, *jsii.Strings(cfg.NSQ.SecretKmsKeyArns()...)...)
	allow("Kms", "OnlyThisStacksKeys", []string{"kms:Decrypt", "kms:GenerateDataKey"}, keys...)
	if secrets := cfg.NSQ.SecretArns(); len(secrets) > 0 {
		allow("SecretsManager", "OnlyTheNsqSecrets", []string{"secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"}, *jsii.Strings(secrets...)...)
	}
}

// retentionDays maps a day count (validated by config.Parse) onto the CDK enum.
func retentionDays(days int) awslogs.RetentionDays {
	m := map[int]awslogs.RetentionDays{
		1: awslogs.RetentionDays_ONE_DAY, 3: awslogs.RetentionDays_THREE_DAYS, 5: awslogs.RetentionDays_FIVE_DAYS,
		7: awslogs.RetentionDays_ONE_WEEK, 14: awslogs.RetentionDays_TWO_WEEKS, 30: awslogs.RetentionDays_ONE_MONTH,
		60: awslogs.RetentionDays_TWO_MONTHS, 90: awslogs.RetentionDays_THREE_MONTHS, 120: awslogs.RetentionDays_FOUR_MONTHS,
		150: awslogs.RetentionDays_FIVE_MONTHS, 180: awslogs.RetentionDays_SIX_MONTHS, 365: awslogs.RetentionDays_ONE_YEAR,
		400: awslogs.RetentionDays_THIRTEEN_MONTHS, 545: awslogs.RetentionDays_EIGHTEEN_MONTHS,
		731: awslogs.RetentionDays_TWO_YEARS, 1096: awslogs.RetentionDays_THREE_YEARS, 1827: awslogs.RetentionDays_FIVE_YEARS,
		2192: awslogs.RetentionDays_SIX_YEARS, 2557: awslogs.RetentionDays_SEVEN_YEARS, 2922: awslogs.RetentionDays_EIGHT_YEARS,
		3288: awslogs.RetentionDays_NINE_YEARS, 3653: awslogs.RetentionDays_TEN_YEARS,
	}
	if r, ok := m[days]; ok {
		return r
	}
	return awslogs.RetentionDays_ONE_MONTH
}
