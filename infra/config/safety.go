package config

import (
	"slices"
	"strconv"
	"strings"
)

// Context keys of the NSQ connection's security.
const (
	KeyAllowPlaintextAuth  = "nsqAllowPlaintextAuth"
	KeyTLSRootCASecretArn  = "nsqTlsRootCaSecretArn"
	KeyTLSCertSecretArn    = "nsqTlsCertSecretArn"
	KeyTLSKeySecretArn     = "nsqTlsKeySecretArn"
	KeyTLSSecretsKmsKeyArn = "nsqTlsSecretsKmsKeyArn"
)

// TLSSecrets are the Secrets Manager secrets holding the bridge's TLS material as PEM text, each
// injected as the environment variable of the bridge's -pem flag.
type TLSSecrets struct {
	RootCAArn, CertArn, KeyArn string
	KmsKeyArn                  string // optional: the CMK that encrypts them (grants kms:Decrypt)
}

// Env maps each configured secret's ARN to the bridge's environment variable, in a fixed order.
func (s TLSSecrets) Env() [][2]string {
	var out [][2]string
	for _, e := range [][2]string{{"NSQK_TLS_ROOT_CA_PEM", s.RootCAArn}, {"NSQK_TLS_CERT_PEM", s.CertArn}, {"NSQK_TLS_KEY_PEM", s.KeyArn}} {
		if e[1] != "" {
			out = append(out, e)
		}
	}
	return out
}

// parseNSQSecurity reads the TLS secrets and the plaintext-auth option. It fails closed: the AUTH
// secret is refused without TLS unless plaintext auth is asked for by name, and TLS material
// without TLS is an error rather than a connection that silently goes without it.
func parseNSQSecurity(p *parser, n *NSQConfig) {
	n.AllowPlaintextAuth = p.boolean(KeyAllowPlaintextAuth, false)
	switch {
	case n.AuthSecretArn != "" && !n.TLS && !n.AllowPlaintextAuth:
		p.fail(KeyAuthSecretArn, "the NSQ auth secret would cross the network in clear: set %s=true, or %s=true to accept that", KeyTLS, KeyAllowPlaintextAuth)
	case n.AllowPlaintextAuth && n.AuthSecretArn == "":
		p.fail(KeyAllowPlaintextAuth, "only valid together with %q", KeyAuthSecretArn)
	}
	s := &n.TLSSecrets
	for _, f := range []struct {
		key string
		dst *string
	}{{KeyTLSRootCASecretArn, &s.RootCAArn}, {KeyTLSCertSecretArn, &s.CertArn}, {KeyTLSKeySecretArn, &s.KeyArn}} {
		*f.dst = p.str(f.key, "")
		if *f.dst == "" {
			continue
		}
		if !reSecretArn.MatchString(*f.dst) {
			p.fail(f.key, "%q is not a complete Secrets Manager secret ARN (arn:aws:secretsmanager:<region>:<account>:secret:<name>-<6 characters>)", *f.dst)
		}
		if !n.TLS {
			p.fail(f.key, "only valid with %s=true", KeyTLS)
		}
	}
	if (s.CertArn == "") != (s.KeyArn == "") {
		p.fail(KeyTLSCertSecretArn, "a client certificate needs its key and a key its certificate: set both %q and %q", KeyTLSCertSecretArn, KeyTLSKeySecretArn)
	}
	s.KmsKeyArn = p.str(KeyTLSSecretsKmsKeyArn, "")
	if s.KmsKeyArn != "" {
		if len(s.Env()) == 0 {
			p.fail(KeyTLSSecretsKmsKeyArn, "only valid together with a TLS secret (%q, %q, %q)", KeyTLSRootCASecretArn, KeyTLSCertSecretArn, KeyTLSKeySecretArn)
		}
		if !reKmsKeyArn.MatchString(s.KmsKeyArn) {
			p.fail(KeyTLSSecretsKmsKeyArn, "%q is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)", s.KmsKeyArn)
		}
	}
}

// insecureBridgeEnv says why an entry of bridgeEnvironment would weaken the NSQ connection's
// security around the stack's own keys, or "" when it does not.
func insecureBridgeEnv(k, v string) string {
	switch {
	case strings.HasPrefix(k, "NSQK_TLS"):
		return "TLS is configured with " + KeyTLS + " and the " + KeyTLSRootCASecretArn + "/" + KeyTLSCertSecretArn + "/" + KeyTLSKeySecretArn + " secrets"
	case k == "NSQK_AUTH_SECRET" || k == "NSQK_ALLOW_PLAINTEXT_AUTH":
		return "the auth secret is configured with " + KeyAuthSecretArn + " (and " + KeyAllowPlaintextAuth + ")"
	case k == "NSQK_CONSUMER_OPT":
		for _, kv := range strings.Split(v, ",") {
			name, _, _ := strings.Cut(kv, "=")
			name = strings.ToLower(strings.ReplaceAll(strings.TrimSpace(name), "-", "_"))
			if name == "auth_secret" || strings.HasPrefix(name, "tls") {
				return "go-nsq option " + name + " would bypass the stack's TLS and auth settings (" + KeyTLS + ", " + KeyAuthSecretArn + ")"
			}
		}
	}
	return ""
}

// bridgeOverheadMiB is what the bridge task needs beyond the budgets of its two memories: the
// program's working allowance (its Go soft memory limit adds 256 MiB to the budgets) and what the
// container and the runtime's non-heap memory take.
const bridgeOverheadMiB = 288

// bridgeMemoryBudgets returns the budgets of the bridge's two memories in MiB, from
// bridgeEnvironment or the bridge's defaults.
func bridgeMemoryBudgets(p *parser, env map[string]string) (lateWindow, written int) {
	lateWindow, written = 128, 64
	for _, f := range []struct {
		name string
		dst  *int
	}{{"NSQK_LATE_WINDOW_MEMORY_MIB", &lateWindow}, {"NSQK_WRITTEN_MEMORY_MIB", &written}} {
		if v, ok := env[f.name]; ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				p.fail(KeyBridgeEnvironment, "%s=%q is not a whole number of MiB (at least 1)", f.name, v)
				continue
			}
			*f.dst = n
		}
	}
	return lateWindow, written
}

// checkBridgeMemory refuses a task too small for the bridge's memory budgets: the kernel would
// kill the task once the memories fill, and every restart redelivers what was held.
func checkBridgeMemory(p *parser, b *BridgeConfig) {
	lw, wr := bridgeMemoryBudgets(p, b.ExtraEnv)
	if need := lw + wr + bridgeOverheadMiB; b.MemoryMiB < need {
		p.fail(KeyBridgeMemory, "%d MiB is below what the bridge needs: NSQK_LATE_WINDOW_MEMORY_MIB (%d) + NSQK_WRITTEN_MEMORY_MIB (%d) + %d MiB = %d MiB; raise %s or lower the budgets",
			b.MemoryMiB, lw, wr, bridgeOverheadMiB, need, KeyBridgeMemory)
	}
}

// SecretArns are the Secrets Manager secrets the bridge task reads at start: the auth secret and
// the TLS material.
func (n NSQConfig) SecretArns() []string {
	var out []string
	if n.AuthSecretArn != "" {
		out = append(out, n.AuthSecretArn)
	}
	for _, e := range n.TLSSecrets.Env() {
		out = append(out, e[1])
	}
	return out
}

// SecretKmsKeyArns are the customer managed keys that encrypt those secrets.
func (n NSQConfig) SecretKmsKeyArns() []string {
	var out []string
	for _, k := range []string{n.AuthSecretKmsKeyArn, n.TLSSecrets.KmsKeyArn} {
		if k != "" && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}
