package stack

import (
	"sort"
	"strings"
	"testing"

	"github.com/nsqk/nsqk/infra/config"
)

const (
	tlsCA   = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:nsq/ca-AbC123"
	tlsCert = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:nsq/cert-AbC123"
	tlsKey  = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:nsq/key-AbC123"
	tlsCMK  = "arn:aws:kms:eu-west-1:123456789012:key/9999abcd-12ab-34cd-56ef-1234567890ab"
)

// TestTLSFromSecretsManager: the CA, client certificate and key reach the bridge as ECS secrets
// from Secrets Manager; the execution role reads exactly those secrets and the auth secret, and
// decrypts with their keys through Secrets Manager only; the Secrets Manager endpoint admits only
// them.
func TestTLSFromSecretsManager(t *testing.T) {
	v := synthVariant(t, "tls", map[string]any{
		config.KeyTLS:                 true,
		config.KeyAuthSecretArn:       prodSecretArn,
		config.KeyAuthSecretKmsKeyArn: prodSecretKey,
		config.KeyTLSRootCASecretArn:  tlsCA,
		config.KeyTLSCertSecretArn:    tlsCert,
		config.KeyTLSKeySecretArn:     tlsKey,
		config.KeyTLSSecretsKmsKeyArn: tlsCMK,
	})

	t.Run("ContainerSecrets", func(t *testing.T) {
		_, td := v.one(t, "AWS::ECS::TaskDefinition")
		c := get(props(td), "ContainerDefinitions", 0)
		got := map[string]string{}
		for _, s := range asList(get(c, "Secrets")) {
			got[get(s, "Name").(string)] = ref(get(s, "ValueFrom"))
		}
		wantEq(t, "secrets", got, map[string]string{
			"NSQK_AUTH_SECRET": prodSecretArn, "NSQK_TLS_ROOT_CA_PEM": tlsCA, "NSQK_TLS_CERT_PEM": tlsCert, "NSQK_TLS_KEY_PEM": tlsKey,
		})
		for _, e := range asList(get(c, "Environment")) {
			if n := get(e, "Name").(string); strings.HasPrefix(n, "NSQK_TLS_") || n == "NSQK_ALLOW_PLAINTEXT_AUTH" {
				t.Errorf("%s is a plain environment variable", n)
			}
		}
	})

	t.Run("ExecutionRoleReadsOnlyTheseSecrets", func(t *testing.T) {
		roleID, _ := v.byPath(t, "BridgeTask/ExecutionRole/Resource")
		var got []string
		for _, g := range v.grants(t, roleID) {
			if strings.HasPrefix(g, "secretsmanager:") || strings.HasPrefix(g, "kms:") {
				got = append(got, g)
			}
		}
		var want [][]string
		for _, s := range []string{prodSecretArn, tlsCA, tlsCert, tlsKey} {
			want = append(want, pairs(s, "secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"))
		}
		want = append(want, pairs(prodSecretKey, "kms:Decrypt"), pairs(tlsCMK, "kms:Decrypt"))
		equalStrings(t, "secret access", got, sortedConcat(want...))
		_, pol := v.byPath(t, "BridgeTask/ExecutionRole/DefaultPolicy/Resource")
		found := false
		for _, s := range asList(get(props(pol), "PolicyDocument", "Statement")) {
			if get(s, "Sid") == "DecryptTheNsqTlsSecrets" {
				found = true
				wantEq(t, "via secrets manager only", get(s, "Condition"), map[string]any{
					"StringEquals": map[string]any{"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"},
				})
			}
		}
		if !found {
			t.Error("no DecryptTheNsqTlsSecrets statement")
		}
	})

	t.Run("SecretsManagerEndpointAdmitsOnlyTheseSecrets", func(t *testing.T) {
		for _, ep := range v.resources("AWS::EC2::VPCEndpoint") {
			if strings.Contains(ref(props(ep)["ServiceName"]), "secretsmanager") {
				var got []string
				for _, r := range asList(get(props(ep), "PolicyDocument", "Statement", 0, "Resource")) {
					got = append(got, ref(r))
				}
				sort.Strings(got)
				equalStrings(t, "endpoint secrets", got, sortedConcat([]string{prodSecretArn, tlsCA, tlsCert, tlsKey}))
				return
			}
		}
		t.Error("no Secrets Manager endpoint")
	})

	t.Run("NagClean", func(t *testing.T) { checkNagClean(t, v) })
}
