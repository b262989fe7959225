package stack

import (
	"fmt"
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatchactions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/nsqk/nsqk/infra/config"
)

// Alarm name suffixes; the full name is <stackName>-<suffix>[-<consumer>]. The alarm runbook
// (RunbookLocation) is keyed by these.
const (
	AlarmStreamWriteThrottled = "stream-write-throttled"
	AlarmStreamIteratorAge    = "stream-iterator-age"
	AlarmPutRecordsFailed     = "bridge-putrecords-failed-entries"
	AlarmBridgeTasksBelow     = "bridge-tasks-below-desired"
	AlarmBridgeDeadLettered   = "bridge-dead-lettered"
	AlarmBridgeAckLatency     = "bridge-ack-latency-p99"
	AlarmBridgeNSQBacklog     = "bridge-nsq-backlog"
	AlarmLambdaErrors         = "lambda-errors"
	AlarmLambdaThrottles      = "lambda-throttles"
	AlarmLambdaIteratorAge    = "lambda-iterator-age"
	AlarmDLQVisible           = "dlq-messages-visible"
	AlarmOrderViolations      = "monitor-order-violations"
	AlarmDLQExpiring          = "dlq-records-expiring"
	AlarmDeadLettersVisible   = "dead-letters-visible"
	AlarmDeadLetteredRecords  = "dead-lettered-records"
	AlarmFailedBatchesStored  = "failed-batches-stored"
)

// RunbookLocation is where an operator finds the alarm runbook; every alarm description and the
// dashboard point there.
const RunbookLocation = "docs/runbook.md in the nsqk repository"

const runbook = "Runbook: " + RunbookLocation + "."

// Monitoring holds the alarms and the dashboard.
type Monitoring struct {
	Alarms    []awscloudwatch.Alarm
	Dashboard awscloudwatch.Dashboard

	scope  constructs.Construct
	cfg    *config.Config
	action awscloudwatchactions.SnsAction
}

type alarmSpec struct {
	id, name, meaning, firstCheck string
	metric                        awscloudwatch.IMetric
	threshold                     float64
	evaluationPeriods, datapoints int
	missing                       awscloudwatch.TreatMissingData
}

func (m *Monitoring) alarm(s alarmSpec) awscloudwatch.Alarm {
	a := awscloudwatch.NewAlarm(m.scope, jsii.String(s.id), &awscloudwatch.AlarmProps{
		AlarmName:          jsii.String(m.cfg.StackName + "-" + s.name),
		AlarmDescription:   jsii.String(fmt.Sprintf("%s First check: %s %s", s.meaning, s.firstCheck, runbook)),
		Metric:             s.metric,
		Threshold:          jsii.Number(s.threshold),
		ComparisonOperator: awscloudwatch.ComparisonOperator_GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
		EvaluationPeriods:  jsii.Number(float64(s.evaluationPeriods)),
		DatapointsToAlarm:  jsii.Number(float64(s.datapoints)),
		TreatMissingData:   s.missing,
	})
	a.AddAlarmAction(m.action)
	a.AddOkAction(m.action)
	m.Alarms = append(m.Alarms, a)
	return a
}

// Periods (functions, not package variables: creating a Duration starts the jsii runtime, which
// the plain-Go configuration tests must not pay for).
func oneMinute() awscdk.Duration   { return awscdk.Duration_Minutes(jsii.Number(1)) }
func fiveMinutes() awscdk.Duration { return awscdk.Duration_Minutes(jsii.Number(5)) }
func threeHours() awscdk.Duration  { return awscdk.Duration_Hours(jsii.Number(3)) }

func opts(stat string, period awscdk.Duration, label string) *awscloudwatch.MetricOptions {
	o := &awscloudwatch.MetricOptions{Statistic: jsii.String(stat), Period: period}
	if label != "" {
		o.Label = jsii.String(label)
	}
	return o
}

// bridgeMetric is one of the bridge's EMF metrics about a stream (namespace NSQK/Bridge, dimension
// Stream; with routes the bridge adds dimension Route).
func bridgeMetric(st *StreamResources, name, stat string, period awscdk.Duration, label string) awscloudwatch.Metric {
	return bridgeGroupMetric(st, "", name, stat, period, label)
}

// bridgeGroupMetric is one of the bridge's EMF metrics as one group (partition "i/N") reports it;
// with an empty partition, as the whole route (every group together).
func bridgeGroupMetric(st *StreamResources, partition, name, stat string, period awscdk.Duration, label string) awscloudwatch.Metric {
	dims := map[string]*string{BridgeDimension: jsii.String(st.Config.Name)}
	if st.Route != nil {
		dims[BridgeRouteDimension] = jsii.String(st.Route.Name)
	}
	if partition != "" {
		dims[BridgePartitionDimension] = jsii.String(partition)
	}
	return awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
		Namespace:     jsii.String(BridgeNamespace),
		MetricName:    jsii.String(name),
		DimensionsMap: &dims,
		Statistic:     jsii.String(stat),
		Period:        period,
		Label:         labelOrNil(label),
	})
}

// consumerMetric is one of a consumer's EMF metrics (namespace NSQK/Consumer, dimension Function).
func consumerMetric(fnName, name, stat string, period awscdk.Duration, label string) awscloudwatch.Metric {
	return awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
		Namespace:     jsii.String(ConsumerNamespace),
		MetricName:    jsii.String(name),
		DimensionsMap: &map[string]*string{ConsumerDimension: jsii.String(fnName)},
		Statistic:     jsii.String(stat),
		Period:        period,
		Label:         labelOrNil(label),
	})
}

func labelOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return jsii.String(s)
}

// failedBatchesMetric counts the objects Lambda puts into the failed-batches bucket (S3 request
// metrics of the whole bucket).
func failedBatchesMetric(b awss3.Bucket, stat string, period awscdk.Duration, label string) awscloudwatch.Metric {
	return awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
		Namespace:     jsii.String("AWS/S3"),
		MetricName:    jsii.String("PutRequests"),
		DimensionsMap: &map[string]*string{"BucketName": b.BucketName(), "FilterId": jsii.String(failedBatchesMetricsID)},
		Statistic:     jsii.String(stat),
		Period:        period,
		Label:         labelOrNil(label),
	})
}

// routeIDs are the alarm id prefix and alarm name suffix of a stream's alarms: none without
// routes (the alarms keep their names), the route otherwise.
func routeIDs(st *StreamResources) (idPrefix, nameSuffix string) {
	if st.Route == nil {
		return "", ""
	}
	return "Route" + st.Route.ID, "-" + st.Route.Name
}

// containerInsightsMetric is a service-level ECS Container Insights metric.
func containerInsightsMetric(g *BridgeGroup, name, label string) awscloudwatch.Metric {
	return awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
		Namespace:  jsii.String("ECS/ContainerInsights"),
		MetricName: jsii.String(name),
		DimensionsMap: &map[string]*string{
			"ClusterName": g.Service.Cluster().ClusterName(),
			"ServiceName": g.Service.ServiceName(),
		},
		Statistic: jsii.String("Average"),
		Period:    oneMinute(),
		Label:     jsii.String(label),
	})
}

func newMonitoring(scope constructs.Construct, cfg *config.Config, s *NsqkStack) *Monitoring {
	b, consumers := s.Bridge, s.Consumers
	m := &Monitoring{scope: scope, cfg: cfg, action: awscloudwatchactions.NewSnsAction(s.Ops.Topic)}

	for _, st := range s.Streams {
		m.streamAlarms(st)
	}

	// Bridge service: each group's tasks.
	var tasksBelow []awscloudwatch.MathExpression
	for _, g := range b.Groups {
		tasksBelow = append(tasksBelow, m.tasksBelowAlarm(g))
	}

	for _, st := range s.Streams {
		m.bridgeAlarms(st)
	}

	m.consumerAlarms(s, consumers)
	for _, st := range s.Streams {
		m.safetyAlarms(cfg, st, b.Groups)
	}

	m.Dashboard = newDashboard(scope, cfg, s, tasksBelow, m.Alarms)
	return m
}

// streamAlarms are a stream's own alarms and the bridge's PutRecords failures on it.
func (m *Monitoring) streamAlarms(st *StreamResources) {
	t, notBreaching := m.cfg.Alarms, awscloudwatch.TreatMissingData_NOT_BREACHING
	rid, rname := routeIDs(st)
	m.alarm(alarmSpec{
		id: rid + "StreamWriteThrottledAlarm", name: AlarmStreamWriteThrottled + rname,
		meaning:    "Kinesis rejected bridge writes for lack of shard capacity (WriteProvisionedThroughputExceeded) in 3 of the last 5 minutes; the bridge retries, so this shows as latency and NSQ backlog before loss.",
		firstCheck: "IncomingBytes/IncomingRecords per shard against 1 MiB/s and 1000 records/s; a hot partition key; then add shards or switch to on-demand.",
		metric:     st.Stream.MetricWriteProvisionedThroughputExceeded(opts("Sum", oneMinute(), "")),
		threshold:  t.StreamWriteThrottledRecords, evaluationPeriods: 5, datapoints: 3, missing: notBreaching,
	})
	m.alarm(alarmSpec{
		id: rid + "StreamIteratorAgeAlarm", name: AlarmStreamIteratorAge + rname,
		meaning:    "The oldest record read by a shared-throughput (GetRecords) consumer was older than the threshold in 3 of 5 minutes: consumers fall behind.",
		firstCheck: "the per-consumer lambda-iterator-age, lambda-errors and lambda-throttles alarms to find which consumer; a consumer stuck retrying one batch.",
		metric:     st.Stream.MetricGetRecordsIteratorAgeMilliseconds(opts("Maximum", oneMinute(), "")),
		threshold:  t.StreamIteratorAgeMs, evaluationPeriods: 5, datapoints: 3, missing: notBreaching,
	})

	m.alarm(alarmSpec{
		id: rid + "PutRecordsFailedAlarm", name: AlarmPutRecordsFailed + rname,
		meaning:    "PutRecords returned failed entries (throttled or internal errors) in 3 of 5 minutes; the bridge retries them and holds the NSQ messages meanwhile.",
		firstCheck: "the bridge logs for the ErrorCode of failed entries; ProvisionedThroughputExceededException means too few shards (see stream-write-throttled), KMS errors mean the stream key is disabled or its grant is missing.",
		metric:     bridgeMetric(st, "PutRecordsFailedEntries", "Sum", oneMinute(), ""),
		threshold:  t.PutRecordsFailedEntries, evaluationPeriods: 5, datapoints: 3, missing: notBreaching,
	})
}

// tasksBelowAlarm watches one group's service: with bridgeGroups each group has its own alarm
// (bridge-tasks-below-desired-<i>), as a group's nodes are read by no other group.
func (m *Monitoring) tasksBelowAlarm(g *BridgeGroup) awscloudwatch.MathExpression {
	label, id, name, what := "bridge tasks missing (desired - running)", "BridgeTasksBelowDesiredAlarm", AlarmBridgeTasksBelow, "the service"
	if g.Partition != "" {
		label = fmt.Sprintf("group %s tasks missing (desired - running)", g.Partition)
		id = "Bridge" + g.suffix() + "TasksBelowDesiredAlarm"
		name = fmt.Sprintf("%s-%d", AlarmBridgeTasksBelow, g.Index)
		what = fmt.Sprintf("the service of bridge group %s (NSQK_NSQD_PARTITION) wants, so the nsqd nodes of that partition", g.Partition)
	}
	// The dashboard graphs every group's expression together: their metric ids must differ.
	desired, running := "desired", "running"
	if g.Partition != "" {
		desired, running = fmt.Sprintf("desired%d", g.Index), fmt.Sprintf("running%d", g.Index)
	}
	tasksBelow := awscloudwatch.NewMathExpression(&awscloudwatch.MathExpressionProps{
		Expression: jsii.String(desired + " - " + running),
		UsingMetrics: &map[string]awscloudwatch.IMetric{
			desired: containerInsightsMetric(g, "DesiredTaskCount", "desired"),
			running: containerInsightsMetric(g, "RunningTaskCount", "running"),
		},
		Label:  jsii.String(label),
		Period: oneMinute(),
	})
	meaning := "Fewer bridge tasks run than the service wants, for 5 minutes in a row (or Container Insights reports nothing): NSQ messages are not being moved."
	if g.Partition != "" {
		meaning = fmt.Sprintf("Fewer bridge tasks run than %s are not being read, for 5 minutes in a row (or Container Insights reports nothing).", what)
	}
	m.alarm(alarmSpec{
		id: id, name: name,
		meaning:    meaning,
		firstCheck: "ECS console > service events and stopped tasks' stop reason (image pull, secret fetch, failing health check, OOM); then the bridge log group.",
		metric:     tasksBelow,
		threshold:  m.cfg.Alarms.BridgeTasksBelowDesired, evaluationPeriods: 5, datapoints: 5, missing: awscloudwatch.TreatMissingData_BREACHING,
	})
	return tasksBelow
}

// bridgeAlarms are the bridge's alarms about one stream (one route).
func (m *Monitoring) bridgeAlarms(st *StreamResources) {
	t, notBreaching := m.cfg.Alarms, awscloudwatch.TreatMissingData_NOT_BREACHING
	rid, rname := routeIDs(st)
	m.alarm(alarmSpec{
		id: rid + "BridgeDeadLetteredAlarm", name: AlarmBridgeDeadLettered + rname,
		meaning:    "The bridge sent messages it cannot put (bad JSON, no partition key, oversized) to the NSQ dead-letter topic in the last 5 minutes.",
		firstCheck: "the dead-letter topic's messages (each carries the reason) and the producer that published them.",
		metric:     bridgeMetric(st, "DeadLettered", "Sum", fiveMinutes(), ""),
		threshold:  t.BridgeDeadLettered, evaluationPeriods: 1, datapoints: 1, missing: notBreaching,
	})
	m.alarm(alarmSpec{
		id: rid + "BridgeAckLatencyAlarm", name: AlarmBridgeAckLatency + rname,
		meaning:    "p99 time from NSQ publish to Kinesis acknowledgement exceeded the threshold in 3 of 5 minutes.",
		firstCheck: "bridge-nsq-backlog (messages waiting in NSQ), Retries and PutRecordsFailedEntries on the dashboard, and bridge CPU (raise bridgeCpu: more tasks break per-key order).",
		metric:     bridgeMetric(st, "AckLatency", "p99", oneMinute(), ""),
		threshold:  t.BridgeAckLatencyP99Ms, evaluationPeriods: 5, datapoints: 3, missing: notBreaching,
	})
	m.alarm(alarmSpec{
		id: rid + "BridgeNsqBacklogAlarm", name: AlarmBridgeNSQBacklog + rname,
		meaning:    "The NSQ channel depth seen by the bridge stayed above the threshold for 5 minutes: messages arrive faster than they are put.",
		firstCheck: "bridge CPU (raise bridgeCpu: more tasks break per-key order), maxInFlight against nsqd's max-rdy-count, stream write throttling (add shards), and the publish rate on the NSQ topic.",
		metric:     bridgeMetric(st, "NSQBacklog", "Maximum", oneMinute(), ""),
		threshold:  t.BridgeNSQBacklog, evaluationPeriods: 5, datapoints: 5, missing: notBreaching,
	})
}

// consumerAlarms are every consumer's alarms and the failed-batches bucket's.
func (m *Monitoring) consumerAlarms(s *NsqkStack, consumers []*Consumer) {
	t, cfg, notBreaching := m.cfg.Alarms, m.cfg, awscloudwatch.TreatMissingData_NOT_BREACHING
	for _, c := range consumers {
		id := consumerID(c.Config.Name)
		fn := c.Function
		m.alarm(alarmSpec{
			id: id + "ErrorsAlarm", name: AlarmLambdaErrors + "-" + c.Config.Name,
			meaning:    fmt.Sprintf("%s failed whole invocations (crash, timeout, returned error) in the last 5 minutes; its shard is retried, bisected, then sent to the DLQ.", c.FunctionName),
			firstCheck: "the function's log group for the panic or timeout; per-record failures are reported as batch item failures and do not count here.",
			metric:     fn.MetricErrors(opts("Sum", fiveMinutes(), "")),
			threshold:  t.LambdaErrors, evaluationPeriods: 1, datapoints: 1, missing: notBreaching,
		})
		m.alarm(alarmSpec{
			id: id + "ThrottlesAlarm", name: AlarmLambdaThrottles + "-" + c.Config.Name,
			meaning:    fmt.Sprintf("%s invocations were throttled in 3 of 5 minutes: the account or reserved concurrency is exhausted.", c.FunctionName),
			firstCheck: "account ConcurrentExecutions against the regional limit; shards x parallelizationFactor is this function's concurrency.",
			metric:     fn.MetricThrottles(opts("Sum", oneMinute(), "")),
			threshold:  t.LambdaThrottles, evaluationPeriods: 5, datapoints: 3, missing: notBreaching,
		})
		m.alarm(alarmSpec{
			id: id + "IteratorAgeAlarm", name: AlarmLambdaIteratorAge + "-" + c.Config.Name,
			meaning:    fmt.Sprintf("%s is behind the stream: the age of the last record it got exceeded the threshold in 3 of 5 minutes.", c.FunctionName),
			firstCheck: "its Errors and Duration (a batch being retried blocks the shard), then batch size / parallelizationFactor against the write rate.",
			metric:     fn.Metric(jsii.String("IteratorAge"), opts("Maximum", oneMinute(), "")),
			threshold:  t.LambdaIteratorAgeMs, evaluationPeriods: 5, datapoints: 3, missing: notBreaching,
		})
		if c.DLQ != nil {
			m.alarm(alarmSpec{
				id: id + "DlqAlarm", name: AlarmDLQVisible + "-" + c.Config.Name,
				meaning:    fmt.Sprintf("%s gave up on at least one batch (retries or record age exhausted): its on-failure queue holds the shard and sequence range.", c.FunctionName),
				firstCheck: "receive one DLQ message (shard id, start/end sequence numbers), read the function logs at that time, fix the cause, then re-read that range from the stream (AT_SEQUENCE_NUMBER iterator) while it is within retention.",
				metric:     c.DLQ.MetricApproximateNumberOfMessagesVisible(opts("Maximum", fiveMinutes(), "")),
				threshold:  t.DLQMessagesVisible, evaluationPeriods: 1, datapoints: 1, missing: notBreaching,
			})
			warn := cfg.ExpiryWarning()
			m.alarm(alarmSpec{
				id: id + "DlqExpiringAlarm", name: AlarmDLQExpiring + "-" + c.Config.Name,
				meaning: fmt.Sprintf("A failed batch of %s has waited %s in its on-failure queue: in %s the stream (retention %dh) or the queue (14 days) drops it and the records it names cannot be re-read.",
					c.FunctionName, warn, min(time.Duration(c.Stream.Config.RetentionHours)*time.Hour, 14*24*time.Hour)-warn, c.Stream.Config.RetentionHours),
				firstCheck: "re-read the range named by the oldest DLQ message from the stream now (AT_SEQUENCE_NUMBER iterator) and keep the records; then fix the cause. The S3 on-failure destination keeps whole batches beyond retention.",
				metric:     c.DLQ.MetricApproximateAgeOfOldestMessage(opts("Maximum", fiveMinutes(), "")),
				threshold:  warn.Seconds(), evaluationPeriods: 1, datapoints: 1, missing: notBreaching,
			})
		}
		m.alarm(alarmSpec{
			id: id + "DeadLettersAlarm", name: AlarmDeadLettersVisible + "-" + c.Config.Name,
			meaning:    fmt.Sprintf("%s holds user records it can never process (a permanent error) in its dead-letter queue; the rest of their aggregates went on.", c.FunctionName),
			firstCheck: "receive one message: it carries the record's data, partition key, shard, sequence and sub-sequence numbers and the reason; fix the producer or the consumer, then replay or delete the messages.",
			metric:     c.DeadLetters.MetricApproximateNumberOfMessagesVisible(opts("Maximum", fiveMinutes(), "")),
			threshold:  t.DeadLetterQueueVisible, evaluationPeriods: 1, datapoints: 1, missing: notBreaching,
		})
		m.alarm(alarmSpec{
			id: id + "DeadLetteredAlarm", name: AlarmDeadLetteredRecords + "-" + c.Config.Name,
			meaning:    fmt.Sprintf("%s sent user records to its dead-letter queue in the last 5 minutes (a permanent error per record).", c.FunctionName),
			firstCheck: "the function's logs at that time (each dead-lettered record is logged with its reason), then the dead-letter queue.",
			metric:     consumerMetric(c.FunctionName, "DeadLetteredRecords", "Sum", fiveMinutes(), ""),
			threshold:  t.DeadLetteredRecords, evaluationPeriods: 1, datapoints: 1, missing: notBreaching,
		})
		if c.Config.Name == config.ConsumerMonitor {
			m.alarm(alarmSpec{
				id: "MonitorOrderViolationsAlarm", name: AlarmOrderViolations,
				meaning:    "The monitor saw records of one key out of publish order in the last 5 minutes.",
				firstCheck: "whether the bridge ran more than one task (NSQ splits a channel across tasks), bridge retries at that time, and the monitor's logs (key and sequence numbers).",
				metric:     consumerMetric(c.FunctionName, "OrderViolations", "Sum", fiveMinutes(), ""),
				threshold:  t.MonitorOrderViolations, evaluationPeriods: 1, datapoints: 1, missing: notBreaching,
			})
		}
	}

	if s.FailedBatches != nil {
		m.alarm(alarmSpec{
			id: "FailedBatchesStoredAlarm", name: AlarmFailedBatchesStored,
			meaning:    "A consumer gave up on at least one batch (retries or record age exhausted) in the last 5 minutes: Lambda stored the whole batch in the failed-batches bucket.",
			firstCheck: "the newest objects in the failed-batches bucket: each names the function (requestContext.functionArn) and the condition, and holds the batch to replay; then that function's logs at that time.",
			metric:     failedBatchesMetric(s.FailedBatches, "Sum", fiveMinutes(), ""),
			threshold:  t.FailedBatchesStored, evaluationPeriods: 1, datapoints: 1, missing: notBreaching,
		})
	}
}
