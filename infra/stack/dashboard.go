package stack

import (
	"fmt"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/interfaces/interfacesawscloudwatch"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/nsqk/nsqk/infra/config"
)

// newDashboard lays out the flow left to right, top to bottom: NSQ in (bridge), Kinesis in,
// Kinesis out, consumers (lag, latency, errors), DLQs, and the bridge service itself.
// With routes, sections 1 to 3 repeat for each route (its stream and its bridge metrics).
func newDashboard(scope constructs.Construct, cfg *config.Config, s *NsqkStack, tasksBelow []awscloudwatch.MathExpression, alarms []awscloudwatch.Alarm) awscloudwatch.Dashboard {
	b, consumers := s.Bridge, s.Consumers
	d := awscloudwatch.NewDashboard(scope, jsii.String("Dashboard"), &awscloudwatch.DashboardProps{
		DashboardName:   jsii.String(cfg.StackName + "-flow"),
		DefaultInterval: threeHours(),
	})
	graph := func(title string, width float64, left []awscloudwatch.IMetric, right []awscloudwatch.IMetric) awscloudwatch.GraphWidget {
		p := &awscloudwatch.GraphWidgetProps{Title: jsii.String(title), Width: jsii.Number(width), Height: jsii.Number(6), Left: &left}
		if len(right) > 0 {
			p.Right = &right
		}
		return awscloudwatch.NewGraphWidget(p)
	}
	section := func(md string) awscloudwatch.TextWidget {
		return awscloudwatch.NewTextWidget(&awscloudwatch.TextWidgetProps{Markdown: jsii.String(md), Width: jsii.Number(24), Height: jsii.Number(1)})
	}

	var alarmRefs []interfacesawscloudwatch.IAlarmRef
	for _, a := range alarms {
		alarmRefs = append(alarmRefs, a)
	}
	header := fmt.Sprintf("# nsqk `%s`\nNSQ topic `%s` / channel `%s` → bridge (ECS Fargate) → Kinesis stream `%s` → Lambda consumers. "+
		"Bridge metrics: namespace `%s`; consumer metrics: `%s`. Alarm runbook: %s.",
		cfg.StackName, cfg.NSQ.Topic, cfg.NSQ.Channel, cfg.Stream.Name, BridgeNamespace, ConsumerNamespace, RunbookLocation)
	if len(cfg.Routes) > 0 {
		var routes []string
		for _, r := range cfg.Routes {
			routes = append(routes, fmt.Sprintf("`%s` (topic `%s` → stream `%s`)", r.Name, r.Topic, r.Stream.Name))
		}
		header = fmt.Sprintf("# nsqk `%s`\nRoutes %s → bridge (ECS Fargate) → Lambda consumers. "+
			"Bridge metrics: namespace `%s`, dimensions `%s` and `%s`; consumer metrics: `%s`. Alarm runbook: %s.",
			cfg.StackName, strings.Join(routes, ", "), BridgeNamespace, BridgeDimension, BridgeRouteDimension, ConsumerNamespace, RunbookLocation)
	}
	d.AddWidgets(awscloudwatch.NewTextWidget(&awscloudwatch.TextWidgetProps{
		Markdown: jsii.String(header),
		Width:    jsii.Number(24), Height: jsii.Number(2),
	}))
	d.AddWidgets(awscloudwatch.NewAlarmStatusWidget(&awscloudwatch.AlarmStatusWidgetProps{
		Title: jsii.String("Alarms"), Alarms: &alarmRefs, Width: jsii.Number(24), Height: jsii.Number(4),
	}))

	for _, st := range s.Streams {
		title := ""
		if st.Route != nil {
			title = fmt.Sprintf(": route `%s` (topic `%s` → stream `%s`)", st.Route.Name, st.Route.Topic, st.Config.Name)
		}
		sum := func(name, label string) awscloudwatch.IMetric {
			return bridgeMetric(st, name, "Sum", oneMinute(), label)
		}
		d.AddWidgets(section("## 1. NSQ in (bridge)" + title))
		d.AddWidgets(
			graph("Messages per minute: in, acked, dead-lettered", 8,
				[]awscloudwatch.IMetric{sum("MessagesIn", "in"), sum("MessagesAcked", "acked (FIN after Kinesis ack)")},
				[]awscloudwatch.IMetric{sum("DeadLettered", "dead-lettered")}),
			graph("NSQ backlog and messages in flight", 8, []awscloudwatch.IMetric{
				bridgeMetric(st, "NSQBacklog", "Maximum", oneMinute(), "NSQ channel depth"),
				bridgeMetric(st, "InFlightMessages", "Maximum", oneMinute(), "in flight in the bridge"),
			}, nil),
			graph("Ack latency: NSQ publish -> Kinesis ack (ms)", 8, []awscloudwatch.IMetric{
				bridgeMetric(st, "AckLatency", "p50", oneMinute(), "p50"),
				bridgeMetric(st, "AckLatency", "p99", oneMinute(), "p99"),
			}, nil),
		)

		d.AddWidgets(section("## 2. Kinesis in" + title))
		d.AddWidgets(
			graph("Records put per minute", 8, []awscloudwatch.IMetric{
				st.Stream.MetricIncomingRecords(opts("Sum", oneMinute(), "IncomingRecords (aggregates)")),
			}, []awscloudwatch.IMetric{
				st.Stream.MetricIncomingBytes(opts("Sum", oneMinute(), "IncomingBytes")),
			}),
			graph("Write failures and throttling", 8, []awscloudwatch.IMetric{
				st.Stream.MetricWriteProvisionedThroughputExceeded(opts("Sum", oneMinute(), "WriteProvisionedThroughputExceeded")),
				st.Stream.MetricPutRecordsFailedRecords(opts("Sum", oneMinute(), "PutRecords.FailedRecords (Kinesis)")),
				st.Stream.MetricPutRecordsThrottledRecords(opts("Sum", oneMinute(), "PutRecords.ThrottledRecords (Kinesis)")),
				sum("PutRecordsFailedEntries", "failed entries (bridge)"),
			}, nil),
			graph("Bridge retries per minute", 8, []awscloudwatch.IMetric{sum("Retries", "retries")}, nil),
		)

		d.AddWidgets(section("## 3. Kinesis out" + title))
		d.AddWidgets(
			graph("Records read per minute (GetRecords consumers)", 8, []awscloudwatch.IMetric{
				st.Stream.MetricGetRecords(opts("Sum", oneMinute(), "GetRecords.Records")),
			}, nil),
			graph("Read throttling", 8, []awscloudwatch.IMetric{
				st.Stream.MetricReadProvisionedThroughputExceeded(opts("Sum", oneMinute(), "ReadProvisionedThroughputExceeded")),
			}, nil),
			graph("Stream iterator age (ms)", 8, []awscloudwatch.IMetric{
				st.Stream.MetricGetRecordsIteratorAgeMilliseconds(opts("Maximum", oneMinute(), "GetRecords.IteratorAgeMilliseconds")),
			}, nil),
		)

	}

	d.AddWidgets(section("## 4. Consumers"))
	var lag, latency, records, errs, dlq, dlqAge, deadLettered []awscloudwatch.IMetric
	for _, c := range consumers {
		n := c.Config.Name
		lag = append(lag,
			c.Function.Metric(jsii.String("IteratorAge"), opts("Maximum", oneMinute(), n+" IteratorAge")),
			consumerMetric(c.FunctionName, "Lag", "Maximum", oneMinute(), n+" Lag"))
		latency = append(latency, consumerMetric(c.FunctionName, "E2ELatency", "p99", oneMinute(), n+" p99"))
		records = append(records,
			consumerMetric(c.FunctionName, "Records", "Sum", oneMinute(), n+" records"),
			consumerMetric(c.FunctionName, "Failures", "Sum", oneMinute(), n+" failures"))
		errs = append(errs,
			c.Function.MetricErrors(opts("Sum", oneMinute(), n+" errors")),
			c.Function.MetricThrottles(opts("Sum", oneMinute(), n+" throttles")))
		if n == config.ConsumerMonitor {
			errs = append(errs,
				consumerMetric(c.FunctionName, "OrderViolations", "Sum", oneMinute(), "monitor order violations"),
				consumerMetric(c.FunctionName, "Gaps", "Sum", oneMinute(), "monitor gaps (seq skipped)"))
		}
		if c.DLQ != nil {
			dlq = append(dlq, c.DLQ.MetricApproximateNumberOfMessagesVisible(opts("Maximum", oneMinute(), n+" failed batches (on-failure queue)")))
			dlqAge = append(dlqAge, c.DLQ.MetricApproximateAgeOfOldestMessage(opts("Maximum", oneMinute(), n+" oldest failed batch")))
		}
		dlq = append(dlq, c.DeadLetters.MetricApproximateNumberOfMessagesVisible(opts("Maximum", oneMinute(), n+" dead letters (user records)")))
		deadLettered = append(deadLettered, consumerMetric(c.FunctionName, "DeadLetteredRecords", "Sum", oneMinute(), n+" dead-lettered records"))
	}
	if s.FailedBatches != nil {
		dlq = append(dlq, failedBatchesMetric(s.FailedBatches, "Sum", oneMinute(), "failed batches stored in S3"))
	}
	d.AddWidgets(
		graph("Consumer lag (ms)", 6, lag, nil),
		graph("End-to-end latency p99: NSQ publish -> consumer (ms)", 6, latency, nil),
		graph("Records and failures per minute", 6, records, nil),
		graph("Errors, throttles, order violations", 6, errs, nil),
	)

	d.AddWidgets(section("## 5. Failed batches, dead letters and the bridge service"))
	failed := graph("Failed batches and dead letters waiting", 8, dlq, nil)
	if len(dlqAge) > 0 {
		failed = graph("Failed batches and dead letters waiting (right: age of the oldest failed batch, s)", 8, dlq, dlqAge)
	}
	d.AddWidgets(
		failed,
		graph("User records dead-lettered per minute", 8, deadLettered, nil),
	)
	var tasks, usage []awscloudwatch.IMetric
	for i, g := range b.Groups {
		prefix := ""
		if g.Partition != "" {
			prefix = "group " + g.Partition + " "
		}
		tasks = append(tasks,
			containerInsightsMetric(g, "RunningTaskCount", prefix+"running"),
			containerInsightsMetric(g, "DesiredTaskCount", prefix+"desired"),
			tasksBelow[i])
		usage = append(usage,
			g.Service.MetricCpuUtilization(opts("Average", oneMinute(), prefix+"CPU")),
			g.Service.MetricMemoryUtilization(opts("Average", oneMinute(), prefix+"memory")))
	}
	row := []awscloudwatch.IWidget{
		graph("Bridge tasks", 8, tasks, nil),
		graph("Bridge CPU and memory (%)", 8, usage, nil),
	}
	for _, st := range s.Streams {
		row = append(row, bridgeNSQWidget(st, graph))
	}
	d.AddWidgets(row...)
	return d
}
