package stack

import (
	"fmt"

	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssecretsmanager"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/nsqk/nsqk/infra/config"
)

// Alarms on the bridge's own view of NSQ and of its memories.
const (
	AlarmBridgeStalled           = "bridge-stalled"
	AlarmBridgeChannelShared     = "bridge-channel-shared"
	AlarmBridgeLateWindowEvicted = "bridge-late-window-evicted"
	AlarmBridgeWrittenEvicted    = "bridge-written-evicted"
)

// BridgeStalledExpression is 1 for a minute in which the bridge had no nsqd connection, or took
// no message while the channel had a backlog. A minute without the connection gauge (the bridge is
// not running or not reporting) yields no value, which the alarm treats as breaching; the backlog
// and intake are filled with 0 because a bridge without nsqd HTTP addresses reports no backlog.
const BridgeStalledExpression = "IF(conns < 1 OR (FILL(taken, 0) == 0 AND FILL(backlog, 0) > 0), 1, 0)"

// BridgeGroupStalledExpression is 1 for a minute in which a bridge group owned at least one of
// the topic's nsqd nodes and had no nsqd connection, or took no message while the channel on its
// nodes had a backlog. A group owning none of the nodes has nothing to read and is never stalled.
// OwnedNodes is reported from the first successful nsqlookupd lookup on (and keeps its last value
// while lookups fail), so a minute without it but with other metrics means the group does not yet
// know its nodes: it counts as owning none, and lookupd being unreachable for every group is left
// to the route-wide bridge-stalled (no group connected).
const BridgeGroupStalledExpression = "IF(FILL(owned, 0) >= 1 AND (FILL(conns, 0) < 1 OR (FILL(taken, 0) == 0 AND FILL(backlog, 0) > 0)), 1, 0)"

// safetyAlarms adds the alarms of a stalled bridge, a shared channel and memories over budget.
func (m *Monitoring) safetyAlarms(cfg *config.Config, st *StreamResources, groups []*BridgeGroup) {
	rid, rname := routeIDs(st)
	channel := cfg.NSQ.Channel
	if st.Route != nil && st.Route.Channel != "" {
		channel = st.Route.Channel
	}
	// With groups this alarm is about the route as a whole (the metrics every group publishes
	// without its Partition dimension): no group connected, nothing taken while a group saw a
	// backlog, or no group reporting at all. A group may own none of the topic's nodes (it then
	// reports no connection and no backlog, and is healthy), so each group's own stall is the
	// bridge-stalled-<i> alarm below; this one still catches what no group alarm can see: every
	// group silent, or nsqlookupd never answering any group (no group then knows its nodes).
	connsStat, backlogStat := "Minimum", "Minimum"
	if cfg.Bridge.Groups > 1 {
		connsStat, backlogStat = "Maximum", "Maximum"
	}
	stalled := awscloudwatch.NewMathExpression(&awscloudwatch.MathExpressionProps{
		Expression: jsii.String(BridgeStalledExpression),
		UsingMetrics: &map[string]awscloudwatch.IMetric{
			"conns":   bridgeMetric(st, "NSQDConnections", connsStat, oneMinute(), "nsqd connections"),
			"taken":   bridgeMetric(st, "MessagesIn", "Sum", oneMinute(), "messages taken"),
			"backlog": bridgeMetric(st, "NSQBacklog", backlogStat, oneMinute(), "channel backlog"),
		},
		Label:  jsii.String("bridge stalled (1 = no nsqd connection, or nothing taken with a backlog)"),
		Period: oneMinute(),
	})
	m.alarm(alarmSpec{
		id: rid + "BridgeStalledAlarm", name: AlarmBridgeStalled + rname,
		meaning:    "For 10 minutes the bridge had no nsqd connection, or took no message while the NSQ channel had a backlog, or reported nothing at all: nothing moves from NSQ to Kinesis although the task may look healthy.",
		firstCheck: "the bridge log group for go-nsq connection errors (DNS, security group, TLS, AUTH, lookupd) and 'nsq backlog poll failed'; NSQDConnections, NSQRdy and SecondsSinceLastMessage on the dashboard; /healthz turns the task unhealthy after --unhealthy-after without nsqd, so ECS replacing tasks points the same way.",
		metric:     stalled,
		threshold:  1, evaluationPeriods: 10, datapoints: 10, missing: awscloudwatch.TreatMissingData_BREACHING,
	})
	if len(groups) > 1 {
		for _, g := range groups {
			m.groupStalledAlarm(st, g)
		}
	}
	if cfg.Bridge.MaxCount == 1 {
		// With several tasks the channel is shared on purpose (the user accepted the reordering).
		m.alarm(alarmSpec{
			id: rid + "BridgeChannelSharedAlarm", name: AlarmBridgeChannelShared + rname,
			meaning:    fmt.Sprintf("Another client consumes the bridge's NSQ channel %q in 3 of the last 5 minutes: nsqd splits the messages between them, so the stream misses what the other takes and a key's messages lose their order.", channel),
			firstCheck: "the bridge log's warning naming the other clients (client id, address, user agent), or nsqadmin's channel page; a second stack or a tool on the same channel; give each consumer its own channel.",
			metric:     bridgeMetric(st, "ChannelOtherClients", "Maximum", oneMinute(), ""),
			threshold:  1, evaluationPeriods: 5, datapoints: 3, missing: awscloudwatch.TreatMissingData_NOT_BREACHING,
		})
	}
	m.alarm(alarmSpec{
		id: rid + "BridgeLateWindowEvictedAlarm", name: AlarmBridgeLateWindowEvicted + rname,
		meaning:    "The bridge forgot keys' newest timestamps before --late-window because --late-window-memory-mib was full: a late redelivery of such a key is no longer recognised and may be written out of order.",
		firstCheck: "memory_entries{memory=\"late_window\"} and the key count; raise NSQK_LATE_WINDOW_MEMORY_MIB in bridgeEnvironment (and bridgeMemoryMiB with it) or shorten NSQK_LATE_WINDOW.",
		metric:     bridgeMetric(st, "LateWindowEvicted", "Sum", fiveMinutes(), ""),
		threshold:  1, evaluationPeriods: 1, datapoints: 1, missing: awscloudwatch.TreatMissingData_NOT_BREACHING,
	})
	m.alarm(alarmSpec{
		id: rid + "BridgeWrittenEvictedAlarm", name: AlarmBridgeWrittenEvicted + rname,
		meaning:    "The bridge forgot written messages before --written-window because --written-memory-mib was full: a redelivery of such a message whose FIN was lost is written to the stream again (a duplicate).",
		firstCheck: "the message rate against the budget (~38 bytes a message for --written-window); raise NSQK_WRITTEN_MEMORY_MIB in bridgeEnvironment (and bridgeMemoryMiB with it).",
		metric:     bridgeMetric(st, "WrittenEvicted", "Sum", fiveMinutes(), ""),
		threshold:  1, evaluationPeriods: 1, datapoints: 1, missing: awscloudwatch.TreatMissingData_NOT_BREACHING,
	})
}

// addTLSSecrets imports the TLS material from Secrets Manager (the ECS secret grants the
// execution role GetSecretValue on exactly those secrets); the returned function lets a task's
// execution role decrypt them with their CMK, through Secrets Manager only (nil without a CMK).
func addTLSSecrets(scope constructs.Construct, cfg *config.Config, secrets *map[string]awsecs.Secret) (*map[string]awsecs.Secret, func(awsecs.FargateTaskDefinition)) {
	s := cfg.NSQ.TLSSecrets
	env := s.Env()
	if len(env) == 0 {
		return secrets, nil
	}
	if secrets == nil {
		secrets = &map[string]awsecs.Secret{}
	}
	ids := map[string]string{"NSQK_TLS_ROOT_CA_PEM": "NsqTlsRootCa", "NSQK_TLS_CERT_PEM": "NsqTlsCert", "NSQK_TLS_KEY_PEM": "NsqTlsKey"}
	for _, e := range env {
		secret := awssecretsmanager.Secret_FromSecretCompleteArn(scope, jsii.String(ids[e[0]]), jsii.String(e[1]))
		(*secrets)[e[0]] = awsecs.Secret_FromSecretsManager(secret, nil)
	}
	if s.KmsKeyArn == "" {
		return secrets, nil
	}
	key := awskms.Key_FromKeyArn(scope, jsii.String("NsqTlsSecretsKey"), jsii.String(s.KmsKeyArn))
	return secrets, func(taskDef awsecs.FargateTaskDefinition) {
		taskDef.ObtainExecutionRole().AddToPrincipalPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
			Sid:       jsii.String("DecryptTheNsqTlsSecrets"),
			Actions:   jsii.Strings("kms:Decrypt"),
			Resources: &[]*string{key.KeyArn()},
			Conditions: &map[string]any{
				"StringEquals": map[string]any{"kms:ViaService": fmt.Sprintf("secretsmanager.%s.amazonaws.com", regionFromArn(env[0][1]))},
			},
		}))
	}
}

// bridgeNSQWidget shows the bridge's hold on NSQ: its nsqd connections, the RDY nsqd grants it,
// other clients on its channel, and the time since it last took a message.
func bridgeNSQWidget(st *StreamResources, graph func(string, float64, []awscloudwatch.IMetric, []awscloudwatch.IMetric) awscloudwatch.GraphWidget) awscloudwatch.GraphWidget {
	title := "Bridge and nsqd (right: seconds since the last message)"
	if st.Route != nil {
		title = fmt.Sprintf("Route %s: bridge and nsqd (right: seconds since the last message)", st.Route.Name)
	}
	return graph(title, 8, []awscloudwatch.IMetric{
		bridgeMetric(st, "NSQDConnections", "Minimum", oneMinute(), "nsqd connections (min)"),
		bridgeMetric(st, "NSQRdy", "Minimum", oneMinute(), "RDY (min)"),
		bridgeMetric(st, "ChannelOtherClients", "Maximum", oneMinute(), "other clients on the channel"),
		bridgeMetric(st, "BacklogPollFailures", "Sum", oneMinute(), "failed /stats polls"),
	}, []awscloudwatch.IMetric{
		bridgeMetric(st, "SecondsSinceLastMessage", "Maximum", oneMinute(), "seconds since the last message"),
	})
}

// groupStalledAlarm is bridge-stalled-<i> (bridge-stalled-<route>-<i> with routes): group i owns
// nsqd nodes of the topic and has not read them for 10 minutes. Missing data is not breaching: a
// minute without any of the group's metrics means its task is not running (or not reporting),
// which its bridge-tasks-below-desired-<i> treats as breaching and the route-wide bridge-stalled
// sees when every group is silent.
func (m *Monitoring) groupStalledAlarm(st *StreamResources, g *BridgeGroup) {
	rid, rname := routeIDs(st)
	stalled := awscloudwatch.NewMathExpression(&awscloudwatch.MathExpressionProps{
		Expression: jsii.String(BridgeGroupStalledExpression),
		UsingMetrics: &map[string]awscloudwatch.IMetric{
			"owned":   bridgeGroupMetric(st, g.Partition, "OwnedNodes", "Minimum", oneMinute(), "owned nsqd nodes"),
			"conns":   bridgeGroupMetric(st, g.Partition, "NSQDConnections", "Minimum", oneMinute(), "nsqd connections"),
			"taken":   bridgeGroupMetric(st, g.Partition, "MessagesIn", "Sum", oneMinute(), "messages taken"),
			"backlog": bridgeGroupMetric(st, g.Partition, "NSQBacklog", "Minimum", oneMinute(), "channel backlog"),
		},
		Label:  jsii.String(fmt.Sprintf("group %s stalled (1 = owns nodes and has no nsqd connection, or took nothing with a backlog)", g.Partition)),
		Period: oneMinute(),
	})
	m.alarm(alarmSpec{
		id: rid + "Bridge" + g.suffix() + "StalledAlarm", name: fmt.Sprintf("%s%s-%d", AlarmBridgeStalled, rname, g.Index),
		meaning:    fmt.Sprintf("For 10 minutes bridge group %s (NSQK_NSQD_PARTITION) owned at least one nsqd node of the topic and had no nsqd connection, or took no message while the channel on its nodes had a backlog: those nodes' messages wait in NSQ and no other group reads them.", g.Partition),
		firstCheck: fmt.Sprintf("the bridge log group, task family %s-bridge-%d, for go-nsq connection errors to the group's nodes (DNS, security group, TLS, AUTH) and 'nsq backlog poll failed'; OwnedNodes, NSQDConnections, NSQRdy with dimension Partition %s; a paused channel on one of its nodes (nsqadmin).", m.cfg.StackName, g.Index, g.Partition),
		metric:     stalled,
		threshold:  1, evaluationPeriods: 10, datapoints: 10, missing: awscloudwatch.TreatMissingData_NOT_BREACHING,
	})
}
