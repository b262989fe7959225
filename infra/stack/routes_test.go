package stack

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/nsqk/nsqk/infra/config"
)

// routesGroupsStack is cdk.json's context with two routes instead of the single topic, lastlocation
// reading the second route's stream, and two bridge groups (one variant for both: each synth costs
// about 20 s, and the groups' tasks must carry the routes config too).
func routesGroupsStack(t *testing.T) *variant {
	return synthVariant(t, "routes-groups", map[string]any{
		config.KeyTopic:      nil,
		config.KeyStreamName: nil,
		config.KeyRoutes: []any{
			map[string]any{"topic": "locations", "streamName": "nsqk-locations", "shardCount": 3.0},
			map[string]any{"name": "orders", "topic": "orders_v2", "streamName": "nsqk-orders", "streamMode": "on-demand",
				"retentionHours": 48.0, "ordering": "relaxed", "maxBufferedTime": "20ms", "channel": "to-kinesis"},
		},
		config.KeyConsumers:    map[string]any{"lastlocation": map[string]any{"route": "orders"}},
		config.KeyBridgeGroups: 2.0,
	})
}

func TestRoutesAndGroupsStack(t *testing.T) {
	v := routesGroupsStack(t)
	locID, loc := v.byPath(t, "RoutelocationsStream/Resource")
	ordID, ord := v.byPath(t, "RouteordersStream/Resource")
	keyID, _ := v.byPath(t, "StreamKey/Resource")

	t.Run("OneStreamPerRoute", func(t *testing.T) {
		delete(props(loc), "Tags")
		delete(props(ord), "Tags")
		wantEq(t, "stream count", len(v.resources("AWS::Kinesis::Stream")), 2)
		wantEq(t, "locations stream", props(loc), map[string]any{
			"Name": "nsqk-locations", "RetentionPeriodHours": 24, "ShardCount": 3,
			"StreamEncryption":  map[string]any{"EncryptionType": "KMS", "KeyId": map[string]any{"Fn::GetAtt": []any{keyID, "Arn"}}},
			"StreamModeDetails": map[string]any{"StreamMode": "PROVISIONED"},
		})
		wantEq(t, "orders stream", props(ord), map[string]any{
			"Name": "nsqk-orders", "RetentionPeriodHours": 48,
			"StreamEncryption":  map[string]any{"EncryptionType": "KMS", "KeyId": map[string]any{"Fn::GetAtt": []any{keyID, "Arn"}}},
			"StreamModeDetails": map[string]any{"StreamMode": "ON_DEMAND"},
		})
	})

	t.Run("BridgeTaskRoleExactActionsOnEveryStream", func(t *testing.T) {
		roleID, _ := v.byPath(t, "BridgeTaskRole/Resource")
		actions := []string{"kinesis:DescribeStreamSummary", "kinesis:ListShards", "kinesis:PutRecord", "kinesis:PutRecords"}
		equalStrings(t, "bridge task role", v.grants(t, roleID), sortedConcat(
			pairs(locID+".Arn", actions...), pairs(ordID+".Arn", actions...), pairs(keyID+".Arn", "kms:GenerateDataKey"),
		))
		wantEq(t, "one task role for every group", len(v.resources("AWS::IAM::Role")) > 0, true)
	})

	t.Run("KinesisEndpointAdmitsEveryStream", func(t *testing.T) {
		found := false
		for _, ep := range v.resources("AWS::EC2::VPCEndpoint") {
			for _, s := range asList(get(props(ep), "PolicyDocument", "Statement")) {
				if get(s, "Sid") == "OnlyTheBridgeCallsOnThisStream" {
					found = true
					var got []string
					for _, r := range asList(get(s, "Resource")) {
						got = append(got, ref(r))
					}
					sort.Strings(got)
					wantEq(t, "endpoint streams", got, []string{locID + ".Arn", ordID + ".Arn"})
				}
			}
		}
		if !found {
			t.Fatal("no Kinesis endpoint policy")
		}
	})

	t.Run("GroupsOneTaskEachWithTheRoutesConfig", func(t *testing.T) {
		wantEq(t, "services", len(v.resources("AWS::ECS::Service")), 2)
		wantEq(t, "task definitions", len(v.resources("AWS::ECS::TaskDefinition")), 2)
		wantEq(t, "no autoscaling: a group is one task", len(v.resources("AWS::ApplicationAutoScaling::ScalableTarget")), 0)
		wantYAML := `routes:
    - name: locations
      topic: locations
      stream: nsqk-locations
    - name: orders
      topic: orders_v2
      channel: to-kinesis
      stream: nsqk-orders
      ordering: relaxed
      max-buffered-time: 20ms
`
		for i, part := range []string{"0/2", "1/2"} {
			suffix := []string{"Group0", "Group1"}[i]
			tdID, td := v.byPath(t, "BridgeTask"+suffix+"/Resource")
			wantEq(t, suffix+" family", props(td)["Family"], []string{"nsqk-bridge-0", "nsqk-bridge-1"}[i])
			env := map[string]string{}
			for _, e := range asList(get(props(td), "ContainerDefinitions", 0, "Environment")) {
				env[get(e, "Name").(string)] = ref(get(e, "Value"))
			}
			wantEq(t, suffix+" environment", env, map[string]string{
				"NSQK_LOOKUPD_HTTP_ADDRESS": strings.Join(v.cfg.NSQ.LookupdHTTPAddresses, ","),
				"NSQK_CONFIG_YAML":          wantYAML,
				"NSQK_NSQD_PARTITION":       part,
				"NSQK_CHANNEL":              "nsqk-kinesis",
				"NSQK_PARTITION_KEY":        "user_id",
				"NSQK_KEY_BUCKETS":          "1",
				"NSQK_MAX_BUFFERED_TIME":    "100ms",
				"NSQK_METRICS_ADDRESS":      ":9090",
				"NSQK_CLOUDWATCH_EMF":       "true",
				"NSQK_LOG_LEVEL":            "info",
				"NSQK_SHUTDOWN_TIMEOUT":     "25s",
			})
			_, svc := v.byPath(t, "BridgeService"+suffix+"/Service")
			p := props(svc)
			wantEq(t, suffix+" task definition", p["TaskDefinition"], map[string]any{"Ref": tdID})
			wantEq(t, suffix+" one task", p["DesiredCount"], 1)
			wantEq(t, suffix+" stop before start", p["DeploymentConfiguration"], map[string]any{
				"DeploymentCircuitBreaker": map[string]any{"Enable": true, "Rollback": true},
				"MaximumPercent":           100, "MinimumHealthyPercent": 0,
			})
		}
		wantEq(t, "the rendered YAML is the config's", v.cfg.BridgeConfigYAML(), wantYAML)
	})

	t.Run("ConsumersReadTheirRoutesStream", func(t *testing.T) {
		for name, want := range map[string]struct {
			streamID, retention string
		}{config.ConsumerMonitor: {locID, "24"}, config.ConsumerLastLocation: {ordID, "48"}} {
			id := consumerID(name)
			_, m := v.byPath(t, id+"Mapping")
			wantEq(t, name+" source", props(m)["EventSourceArn"], map[string]any{"Fn::GetAtt": []any{want.streamID, "Arn"}})
			_, fn := v.byPath(t, id+"Function/Resource")
			wantEq(t, name+" retention", get(props(fn), "Environment", "Variables", "NSQK_STREAM_RETENTION_HOURS"), want.retention)
			roleID, _ := v.byPath(t, id+"Role/Resource")
			for _, g := range v.grants(t, roleID) {
				if strings.HasPrefix(g, "kinesis:") && !strings.HasSuffix(g, " @ "+want.streamID+".Arn") {
					t.Errorf("%s reads another stream: %s", name, g)
				}
			}
		}
	})

	t.Run("AlarmsPerRouteAndPerGroup", func(t *testing.T) {
		names := map[string]map[string]any{}
		for _, a := range v.resources("AWS::CloudWatch::Alarm") {
			names[props(a)["AlarmName"].(string)] = props(a)
		}
		for _, r := range []struct{ route, stream, streamID string }{{"locations", "nsqk-locations", locID}, {"orders", "nsqk-orders", ordID}} {
			for _, a := range []string{AlarmPutRecordsFailed, AlarmBridgeDeadLettered, AlarmBridgeAckLatency, AlarmBridgeNSQBacklog,
				AlarmBridgeLateWindowEvicted, AlarmBridgeWrittenEvicted, AlarmBridgeChannelShared} {
				p, ok := names["nsqk-"+a+"-"+r.route]
				if !ok {
					t.Errorf("missing alarm nsqk-%s-%s", a, r.route)
					continue
				}
				dims := map[string]string{}
				for _, d := range asList(p["Dimensions"]) {
					dims[get(d, "Name").(string)] = ref(get(d, "Value"))
				}
				wantEq(t, a+"-"+r.route+" dimensions", dims, map[string]string{"Stream": r.stream, "Route": r.route})
			}
			for _, a := range []string{AlarmStreamWriteThrottled, AlarmStreamIteratorAge} {
				p, ok := names["nsqk-"+a+"-"+r.route]
				if !ok {
					t.Errorf("missing alarm nsqk-%s-%s", a, r.route)
					continue
				}
				wantEq(t, a+"-"+r.route+" stream", get(p, "Dimensions", 0, "Value"), map[string]any{"Ref": r.streamID})
			}
			p, ok := names["nsqk-"+AlarmBridgeStalled+"-"+r.route]
			if !ok {
				t.Errorf("missing alarm nsqk-%s-%s", AlarmBridgeStalled, r.route)
				continue
			}
			stats := map[string]any{}
			for _, m := range asList(p["Metrics"]) {
				if dims := get(m, "MetricStat", "Metric", "Dimensions"); dims != nil {
					wantEq(t, "stalled-"+r.route+" dimensions", dims, []any{
						map[string]any{"Name": "Route", "Value": r.route}, map[string]any{"Name": "Stream", "Value": r.stream},
					})
					stats[get(m, "Id").(string)] = get(m, "MetricStat", "Stat")
				}
			}
			// A group owning none of the topic's nodes reports no connection: with groups the alarm
			// takes the best group's connections and any group's backlog.
			wantEq(t, "stalled-"+r.route+" statistics", stats, map[string]any{"conns": "Maximum", "taken": "Sum", "backlog": "Maximum"})
			// Each group's own stall alarm reads the group's series (dimension Partition).
			for i, part := range []string{"0/2", "1/2"} {
				name := fmt.Sprintf("nsqk-%s-%s-%d", AlarmBridgeStalled, r.route, i)
				p, ok := names[name]
				if !ok {
					t.Errorf("missing alarm %s", name)
					continue
				}
				wantEq(t, name+" missing data", p["TreatMissingData"], "notBreaching")
				wantEq(t, name+" periods", []any{p["EvaluationPeriods"], p["DatapointsToAlarm"], p["Threshold"]}, []any{10.0, 10.0, 1.0})
				stats := map[string]any{}
				for _, m := range asList(p["Metrics"]) {
					if e := get(m, "Expression"); e != nil {
						wantEq(t, name+" expression", e, BridgeGroupStalledExpression)
					}
					if dims := get(m, "MetricStat", "Metric", "Dimensions"); dims != nil {
						wantEq(t, name+" dimensions", dims, []any{
							map[string]any{"Name": "Partition", "Value": part},
							map[string]any{"Name": "Route", "Value": r.route}, map[string]any{"Name": "Stream", "Value": r.stream},
						})
						stats[get(m, "Id").(string)] = []any{get(m, "MetricStat", "Metric", "MetricName"), get(m, "MetricStat", "Stat")}
					}
				}
				wantEq(t, name+" metrics", stats, map[string]any{"owned": []any{"OwnedNodes", "Minimum"},
					"conns": []any{"NSQDConnections", "Minimum"}, "taken": []any{"MessagesIn", "Sum"}, "backlog": []any{"NSQBacklog", "Minimum"}})
			}
		}
		for i := range 2 {
			name := "nsqk-" + AlarmBridgeTasksBelow + "-" + []string{"0", "1"}[i]
			p, ok := names[name]
			if !ok {
				t.Errorf("missing alarm %s", name)
				continue
			}
			svcID, _ := v.byPath(t, "BridgeService"+[]string{"Group0", "Group1"}[i]+"/Service")
			var services []string
			for _, m := range asList(p["Metrics"]) {
				for _, d := range asList(get(m, "MetricStat", "Metric", "Dimensions")) {
					if get(d, "Name") == "ServiceName" {
						services = append(services, ref(get(d, "Value")))
					}
				}
			}
			wantEq(t, name+" watches its own service", services, []string{svcID + ".Name", svcID + ".Name"})
		}
		for _, n := range []string{"nsqk-" + AlarmBridgeTasksBelow, "nsqk-" + AlarmBridgeStalled, "nsqk-" + AlarmPutRecordsFailed} {
			if _, ok := names[n]; ok {
				t.Errorf("alarm %s without route or group", n)
			}
		}
		// 10 per route, 1 per group, 1 per group and route, 7 per consumer with its queues, the
		// monitor's order violations.
		wantEq(t, "alarm count", len(names), 2*10+2+2*2+2*7+1)
	})

	t.Run("DashboardRowsPerRoute", func(t *testing.T) {
		_, d := v.one(t, "AWS::CloudWatch::Dashboard")
		body := ref(props(d)["DashboardBody"])
		for _, s := range []string{"## 1. NSQ in (bridge): route `locations`", "## 1. NSQ in (bridge): route `orders`",
			"## 2. Kinesis in: route `orders`", "## 3. Kinesis out: route `locations`", `\"Route\",\"orders\"`,
			"group 0/2 running", "group 1/2 CPU", "Route orders: bridge and nsqd"} {
			if !strings.Contains(body, s) {
				t.Errorf("dashboard does not show %s", s)
			}
		}
	})

	t.Run("Outputs", func(t *testing.T) {
		for _, o := range []string{"RoutelocationsStreamName", "RouteordersStreamArn", "BridgeGroup0ServiceName", "BridgeGroup1ServiceName"} {
			if get(v.json, "Outputs", o) == nil {
				t.Errorf("no output %s", o)
			}
		}
		for _, o := range []string{"StreamName", "BridgeServiceName"} {
			if get(v.json, "Outputs", o) != nil {
				t.Errorf("output %s of a single stream or service", o)
			}
		}
	})

	t.Run("NagClean", func(t *testing.T) { checkNagClean(t, v) })
}

// TestSynthRefusesGroupsWithoutLookupd: the app refuses, before any synthesis, groups that
// cannot split nodes and groups of several tasks.
func TestSynthRefusesGroupsWithoutLookupd(t *testing.T) {
	for _, tc := range []struct {
		overrides map[string]any
		want      string
	}{
		{map[string]any{config.KeyBridgeGroups: 2.0, config.KeyLookupdHTTP: nil, config.KeyNsqdTCP: "nsqd-0:4150,nsqd-1:4150"},
			`context "bridgeGroups": 2 groups split the nsqd nodes nsqlookupd lists: set "nsqLookupdHttpAddresses"`},
		{map[string]any{config.KeyBridgeGroups: 2.0, config.KeyBridgeMaxTasks: 2.0, config.KeyAcceptReordering: true},
			`context "bridgeGroups": 2 groups run one task each: bridgeMaxTasks=2`},
		{map[string]any{config.KeyRoutes: []any{map[string]any{"topic": "a", "streamName": "s"}}},
			`context "nsqTopic": describes the single route of a stack without "routes"`},
	} {
		ctx := cdkJSONContext(t)
		for k, v := range tc.overrides {
			if v == nil {
				delete(ctx, k)
			} else {
				ctx[k] = v
			}
		}
		_, err := config.Load(ctx)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%v) = %v\nwant an error containing %s", tc.overrides, err, tc.want)
		}
	}
}

// Groups without routes: one stall alarm per group, named by its index, on its Partition series,
// besides the stream-wide bridge-stalled.
func TestGroupStalledAlarmsWithoutRoutes(t *testing.T) {
	v := synthVariant(t, "groups", map[string]any{config.KeyBridgeGroups: 3.0})
	names := map[string]map[string]any{}
	for _, a := range v.resources("AWS::CloudWatch::Alarm") {
		names[props(a)["AlarmName"].(string)] = props(a)
	}
	if _, ok := names["nsqk-"+AlarmBridgeStalled]; !ok {
		t.Errorf("no stream-wide %s", AlarmBridgeStalled)
	}
	for i := range 3 {
		name := fmt.Sprintf("nsqk-%s-%d", AlarmBridgeStalled, i)
		p, ok := names[name]
		if !ok {
			t.Errorf("missing alarm %s", name)
			continue
		}
		for _, m := range asList(p["Metrics"]) {
			if dims := get(m, "MetricStat", "Metric", "Dimensions"); dims != nil {
				got := map[string]string{}
				for _, d := range asList(dims) {
					got[get(d, "Name").(string)] = ref(get(d, "Value"))
				}
				if got["Partition"] != fmt.Sprintf("%d/3", i) || got["Stream"] == "" || len(got) != 2 {
					t.Errorf("%s reads dimensions %v", name, got)
				}
			}
		}
	}
	if _, ok := names[fmt.Sprintf("nsqk-%s-3", AlarmBridgeStalled)]; ok {
		t.Errorf("a stall alarm for a fourth group")
	}
}
