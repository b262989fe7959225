package bridge

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

func tlsConfig(o *Options) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.TLSInsecureSkipVerify}
	if o.TLSRootCAFile != "" {
		pem, err := os.ReadFile(o.TLSRootCAFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-root-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-root-ca-file %s: no certificates found", o.TLSRootCAFile)
		}
		tc.RootCAs = pool
	}
	if o.TLSCert != "" || o.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
