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

// safetyAlarms adds the alarms of a stalled bridge, a shared channel and memories over budget.
func (m *Monitoring) safetyAlarms(cfg *config.Config, st *StreamResources) {
	rid, rname := routeIDs(st)
	channel := cfg.NSQ.Channel
	if st.Route != nil && st.Route.Channel != "" {
		channel = st.Route.Channel
	}
	// Bridge groups publish under the same dimensions, and a group may own none of the topic's
	// nodes (it then reports no connection and no backlog, and is healthy). With groups the alarm
	// is about the route as a whole: no group connected, or nothing taken while a group saw a
	// backlog; a group's own task is watched by its bridge-tasks-below-desired-<i>.
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
