package bridge

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// validateTLS checks the NSQ security options. It fails closed: TLS material without --tls, an
// AUTH secret that would travel in clear, or security settings slipped in through --consumer-opt
// (around these checks) are errors rather than a connection weaker than the operator asked for.
// With --tls, go-nsq (as patched in third_party/go-nsq) fails any connection that nsqd does not
// upgrade to TLS.
func (o *Options) validateTLS() []error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	if o.AuthSecret != "" && !o.TLS && !o.AllowPlaintextAuth {
		bad("--auth-secret needs --tls (or --allow-plaintext-auth to send the secret in clear)")
	}
	for _, f := range []struct {
		set  bool
		name string
	}{
		{o.TLSInsecureSkipVerify, "--tls-insecure-skip-verify"},
		{o.TLSRootCAFile != "", "--tls-root-ca-file"}, {o.TLSRootCAPEM != "", "--tls-root-ca-pem"},
		{o.TLSCert != "", "--tls-cert"}, {o.TLSCertPEM != "", "--tls-cert-pem"},
		{o.TLSKey != "", "--tls-key"}, {o.TLSKeyPEM != "", "--tls-key-pem"},
	} {
		if f.set && !o.TLS {
			bad("%s needs --tls (without it the connection is plaintext)", f.name)
		}
	}
	for _, p := range [][2]string{
		{o.TLSRootCAFile, o.TLSRootCAPEM}, {o.TLSCert, o.TLSCertPEM}, {o.TLSKey, o.TLSKeyPEM},
	} {
		if p[0] != "" && p[1] != "" {
			bad("a TLS file option and its -pem twin are both set: use one")
			break
		}
	}
	hasCert := o.TLSCert != "" || o.TLSCertPEM != ""
	hasKey := o.TLSKey != "" || o.TLSKeyPEM != ""
	if hasCert != hasKey {
		bad("a TLS client certificate needs its key and a key its certificate")
	}
	for _, kv := range o.ConsumerOpts {
		k, _, _ := strings.Cut(kv, "=")
		name := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(k), "-", "_"))
		if name == "auth_secret" || strings.HasPrefix(name, "tls") {
			bad("--consumer-opt %s: TLS and AUTH are set with --tls, --tls-* and --auth-secret, not --consumer-opt", k)
		}
	}
	return errs
}

// tlsConfig builds the client TLS configuration from the files or the PEM content.
func tlsConfig(o *Options) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.TLSInsecureSkipVerify}
	ca, err := pemContent(o.TLSRootCAPEM, o.TLSRootCAFile, "--tls-root-ca-file")
	if err != nil {
		return nil, err
	}
	if ca != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, errors.New("--tls-root-ca-pem/--tls-root-ca-file: no PEM certificate found")
		}
		tc.RootCAs = pool
	}
	cert, err := pemContent(o.TLSCertPEM, o.TLSCert, "--tls-cert")
	if err != nil {
		return nil, err
	}
	key, err := pemContent(o.TLSKeyPEM, o.TLSKey, "--tls-key")
	if err != nil {
		return nil, err
	}
	if cert != nil || key != nil {
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("TLS client certificate and key: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// pemContent returns the PEM given as content, else read from file; nil when neither is set.
func pemContent(content, file, fileFlag string) ([]byte, error) {
	if content != "" {
		return []byte(content), nil
	}
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fileFlag, err)
	}
	return b, nil
}
