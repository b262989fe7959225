package stack

import (
	"sort"
	"strings"
	"testing"

	"github.com/nsqk/nsqk/infra/config"
)

// TestNetworkOptions: one NAT gateway per availability zone, no interface endpoints, and the NSQ
// channel derived from another stack name.
func TestNetworkOptions(t *testing.T) {
	v := synthVariant(t, "network", map[string]any{
		config.KeyStackName:      "fleet",
		config.KeyVpcNatGateways: 2,
		config.KeyVpcEndpoints:   false,
	})
	withSecret := synthVariant(t, "network-secret", map[string]any{
		config.KeyAuthSecretArn:       prodSecretArn,
		config.KeyAuthSecretKmsKeyArn: prodSecretKey,
		config.KeyAllowPlaintextAuth:  true,
	})

	t.Run("SecretsManagerEndpointScopedToTheSecret", func(t *testing.T) {
		var found int
		for _, ep := range withSecret.resources("AWS::EC2::VPCEndpoint") {
			name := ref(props(ep)["ServiceName"])
			switch {
			case strings.Contains(name, "secretsmanager"):
				found++
				wantEq(t, "secrets manager endpoint policy", get(props(ep), "PolicyDocument", "Statement"), []any{map[string]any{
					"Sid": "OnlyTheNsqSecrets", "Effect": "Allow", "Principal": map[string]any{"AWS": "*"},
					"Action":   []any{"secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"},
					"Resource": prodSecretArn,
				}})
			case strings.Contains(name, ".kms"):
				streamKey, _ := withSecret.byPath(t, "StreamKey/Resource")
				var keys []string
				for _, r := range asList(get(props(ep), "PolicyDocument", "Statement", 0, "Resource")) {
					keys = append(keys, ref(r))
				}
				sort.Strings(keys)
				wantEq(t, "kms endpoint keys", keys, []string{streamKey + ".Arn", prodSecretKey})
			}
		}
		wantEq(t, "secrets manager endpoints", found, 1)
		checkNagClean(t, withSecret)
	})

	t.Run("PlaintextAuthOnlyWhenAskedFor", func(t *testing.T) {
		got := map[string]any{}
		for _, w := range []*variant{v, withSecret} {
			_, td := w.one(t, "AWS::ECS::TaskDefinition")
			for _, e := range asList(get(props(td), "ContainerDefinitions", 0, "Environment")) {
				if get(e, "Name") == "NSQK_ALLOW_PLAINTEXT_AUTH" {
					got[w.cfg.StackName+"/"+strings.Join(w.cfg.NSQ.SecretArns(), ",")] = get(e, "Value")
				}
			}
		}
		wantEq(t, "NSQK_ALLOW_PLAINTEXT_AUTH", got, map[string]any{"nsqk/" + prodSecretArn: "true"})
	})

	t.Run("OneNatGatewayPerAZ", func(t *testing.T) {
		nats := v.resources("AWS::EC2::NatGateway")
		wantEq(t, "NAT gateways", len(nats), 2)
		var used []string
		for _, r := range v.resources("AWS::EC2::Route") {
			if nat := props(r)["NatGatewayId"]; nat != nil {
				used = append(used, ref(nat))
			}
		}
		sort.Strings(used)
		if len(used) != 2 || used[0] == used[1] {
			t.Errorf("each private subnet must route through its own AZ's NAT gateway, got %v", used)
		}
	})

	t.Run("NoInterfaceEndpoints", func(t *testing.T) {
		for id, ep := range v.resources("AWS::EC2::VPCEndpoint") {
			if props(ep)["VpcEndpointType"] != "Gateway" {
				t.Errorf("interface endpoint %s created with vpcInterfaceEndpoints=false", id)
			}
		}
	})

	t.Run("ChannelFromTheStackName", func(t *testing.T) {
		_, td := v.one(t, "AWS::ECS::TaskDefinition")
		for _, e := range asList(get(props(td), "ContainerDefinitions", 0, "Environment")) {
			if get(e, "Name") == "NSQK_CHANNEL" {
				wantEq(t, "channel", get(e, "Value"), "fleet-kinesis")
				return
			}
		}
		t.Error("no NSQK_CHANNEL")
	})

	t.Run("NagClean", func(t *testing.T) { checkNagClean(t, v) })
}
