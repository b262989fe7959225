package config

import (
	"strings"
	"testing"
)

const (
	testSecret = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:nsq/auth-AbC123"
	testCA     = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:nsq/ca-AbC123"
	testCert   = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:nsq/cert-AbC123"
	testKey    = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:nsq/key-AbC123"
	testCMK    = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
)

// The NSQ connection fails closed: the auth secret needs TLS or a named exception, TLS material
// needs TLS, and the free-form environment cannot weaken either.
func TestParseConfigNSQSecurityRejects(t *testing.T) {
	cases := []struct {
		name string
		ctx  map[string]any
		want string
	}{
		{"auth secret without TLS", with(minimal(), KeyAuthSecretArn, testSecret), "set nsqTls=true, or nsqAllowPlaintextAuth=true"},
		{"plaintext auth without a secret", with(minimal(), KeyAllowPlaintextAuth, true), `"nsqAllowPlaintextAuth": only valid together with "nsqAuthSecretArn"`},
		{"CA secret without TLS", with(minimal(), KeyTLSRootCASecretArn, testCA), `"nsqTlsRootCaSecretArn": only valid with nsqTls=true`},
		{"cert without key", with(minimal(), KeyTLS, true, KeyTLSCertSecretArn, testCert), "needs its key"},
		{"key without cert", with(minimal(), KeyTLS, true, KeyTLSKeySecretArn, testKey), "needs its key"},
		{"partial TLS secret ARN", with(minimal(), KeyTLS, true, KeyTLSRootCASecretArn, "arn:aws:secretsmanager:eu-west-1:123456789012:secret:ca"), "complete Secrets Manager secret ARN"},
		{"TLS key without TLS secrets", with(minimal(), KeyTLS, true, KeyTLSSecretsKmsKeyArn, testCMK), "only valid together with a TLS secret"},
		{"bad TLS KMS key", with(minimal(), KeyTLS, true, KeyTLSRootCASecretArn, testCA, KeyTLSSecretsKmsKeyArn, "key-1"), "not a KMS key ARN"},
		{"env skips TLS verification", with(minimal(), KeyBridgeEnvironment, map[string]any{"NSQK_TLS_INSECURE_SKIP_VERIFY": "true"}), "NSQK_TLS_INSECURE_SKIP_VERIFY is refused"},
		{"env CA file", with(minimal(), KeyBridgeEnvironment, map[string]any{"NSQK_TLS_ROOT_CA_PEM": "x"}), "NSQK_TLS_ROOT_CA_PEM is refused"},
		{"env plaintext auth", with(minimal(), KeyBridgeEnvironment, map[string]any{"NSQK_ALLOW_PLAINTEXT_AUTH": "true"}), "NSQK_ALLOW_PLAINTEXT_AUTH is refused"},
		{"env consumer-opt auth", with(minimal(), KeyBridgeEnvironment, map[string]any{"NSQK_CONSUMER_OPT": "heartbeat_interval=10s,auth_secret=x"}), "auth_secret would bypass"},
		{"env consumer-opt tls", with(minimal(), KeyBridgeEnvironment, map[string]any{"NSQK_CONSUMER_OPT": "tls-v1=false"}), "tls_v1 would bypass"},
		{"task smaller than the memories", with(minimal(), KeyBridgeCPU, 256, KeyBridgeMemory, 512, KeyBridgeEnvironment, map[string]any{"NSQK_LATE_WINDOW_MEMORY_MIB": 256}),
			"512 MiB is below what the bridge needs: NSQK_LATE_WINDOW_MEMORY_MIB (256) + NSQK_WRITTEN_MEMORY_MIB (64) + 288 MiB = 608 MiB"},
		{"memory budget not a number", with(minimal(), KeyBridgeEnvironment, map[string]any{"NSQK_WRITTEN_MEMORY_MIB": "lots"}), `NSQK_WRITTEN_MEMORY_MIB="lots" is not a whole number`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(MapContext(tc.ctx))
			if err == nil {
				t.Fatalf("want an error containing %q, got none", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error containing %q, got:\n%v", tc.want, err)
			}
		})
	}
}

func TestParseConfigNSQSecurityAccepts(t *testing.T) {
	c := parse(t, with(minimal(), KeyAuthSecretArn, testSecret, KeyAllowPlaintextAuth, true))
	wantEq := func(what string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s: got %v, want %v", what, got, want)
		}
	}
	wantEq("plaintext auth accepted by name", c.NSQ.AllowPlaintextAuth, true)

	c = parse(t, with(minimal(), KeyTLS, true, KeyTLSRootCASecretArn, testCA, KeyTLSCertSecretArn, testCert, KeyTLSKeySecretArn, testKey,
		KeyTLSSecretsKmsKeyArn, testCMK, KeyBridgeEnvironment, map[string]any{"NSQK_CONSUMER_OPT": "heartbeat_interval=10s"}))
	wantEq("env", len(c.NSQ.TLSSecrets.Env()), 3)
	wantEq("CA env", c.NSQ.TLSSecrets.Env()[0], [2]string{"NSQK_TLS_ROOT_CA_PEM", testCA})
	wantEq("KMS", c.NSQ.TLSSecrets.KmsKeyArn, testCMK)

	// The smallest Fargate task holds the default budgets; bigger budgets need a bigger task.
	parse(t, with(minimal(), KeyBridgeCPU, 256, KeyBridgeMemory, 512))
	parse(t, with(minimal(), KeyBridgeCPU, 512, KeyBridgeMemory, 2048, KeyBridgeEnvironment, map[string]any{"NSQK_LATE_WINDOW_MEMORY_MIB": 1024, "NSQK_WRITTEN_MEMORY_MIB": 512}))
}
