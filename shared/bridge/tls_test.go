package bridge

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"
	"github.com/nsqio/nsq/nsqd"

	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/local/nsqlocal"
)

func TestValidateTLSFailsClosed(t *testing.T) {
	base := func() Options {
		o := NewOptions()
		o.NSQDTCPAddresses, o.Topic, o.Stream = []string{"127.0.0.1:4150"}, "t", "s"
		return o
	}
	for _, tc := range []struct {
		name string
		set  func(*Options)
		want string // "" = valid
	}{
		{"auth secret without TLS", func(o *Options) { o.AuthSecret = "s" }, "--auth-secret needs --tls"},
		{"auth secret with TLS", func(o *Options) { o.AuthSecret, o.TLS = "s", true }, ""},
		{"auth secret in clear when allowed", func(o *Options) { o.AuthSecret, o.AllowPlaintextAuth = "s", true }, ""},
		{"CA content without TLS", func(o *Options) { o.TLSRootCAPEM = "x" }, "--tls-root-ca-pem needs --tls"},
		{"CA file without TLS", func(o *Options) { o.TLSRootCAFile = "ca.pem" }, "--tls-root-ca-file needs --tls"},
		{"skip verify without TLS", func(o *Options) { o.TLSInsecureSkipVerify = true }, "--tls-insecure-skip-verify needs --tls"},
		{"CA file and content", func(o *Options) { o.TLS, o.TLSRootCAFile, o.TLSRootCAPEM = true, "ca.pem", "x" }, "use one"},
		{"key file and content", func(o *Options) {
			o.TLS, o.TLSCert, o.TLSKey, o.TLSKeyPEM = true, "c.pem", "k.pem", "x"
		}, "use one"},
		{"certificate without key", func(o *Options) { o.TLS, o.TLSCertPEM = true, "x" }, "needs its key"},
		{"key without certificate", func(o *Options) { o.TLS, o.TLSKey = true, "k.pem" }, "needs its key"},
		{"certificate from a file, key as content", func(o *Options) { o.TLS, o.TLSCert, o.TLSKeyPEM = true, "c.pem", "x" }, ""},
		{"consumer-opt tls_v1", func(o *Options) { o.ConsumerOpts = []string{"tls_v1=false"} }, "--consumer-opt tls_v1"},
		{"consumer-opt tls-insecure-skip-verify", func(o *Options) {
			o.TLS, o.ConsumerOpts = true, []string{"tls-insecure-skip-verify=true"}
		}, "--consumer-opt tls-insecure-skip-verify"},
		{"consumer-opt tls_root_ca_file", func(o *Options) { o.ConsumerOpts = []string{"TLS_ROOT_CA_FILE=/x"} }, "--consumer-opt TLS_ROOT_CA_FILE"},
		{"consumer-opt auth_secret", func(o *Options) { o.ConsumerOpts = []string{"auth_secret=s"} }, "--consumer-opt auth_secret"},
		{"consumer-opt auth-secret", func(o *Options) { o.ConsumerOpts = []string{" auth-secret=s"} }, "--consumer-opt  auth-secret"},
		{"other consumer-opt", func(o *Options) { o.ConsumerOpts = []string{"max_backoff_duration=10s"} }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base()
			tc.set(&o)
			err := o.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// pki is a CA and the certificates it signed, as PEM.
type pki struct {
	caPEM                 string
	ca                    *x509.Certificate
	caKey                 *ecdsa.PrivateKey
	serverCert, serverKey string // for 127.0.0.1 and localhost
	clientCert, clientKey string
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{caPEM: pemString("CERTIFICATE", der), ca: ca, caKey: key}
	p.serverCert, p.serverKey = p.issue(t, 2, "nsqd", x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = p.issue(t, 3, "nsqk-bridge", x509.ExtKeyUsageClientAuth)
	return p
}

func (p *pki) issue(t *testing.T, serial int64, cn string, usage x509.ExtKeyUsage) (certPEM, keyPEM string) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemString("CERTIFICATE", der), pemString("PRIVATE KEY", kder)
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemString(typ string, der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

// nsqdOptions writes the nsqd side (server certificate, key, CA) for nsqd's file options.
func (p *pki) nsqdOptions(t *testing.T) nsqlocal.Options {
	dir := t.TempDir()
	write := func(name, content string) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	return nsqlocal.Options{TLSCert: write("server.pem", p.serverCert), TLSKey: write("server-key.pem", p.serverKey),
		TLSRootCAFile: write("ca.pem", p.caPEM)}
}

// authServer is an nsqd auth endpoint (--auth-http-address) that grants everything and records the
// secrets it is asked about, with whether the client connection was TLS.
type authServer struct {
	addr string
	mu   sync.Mutex
	asks []string // "secret tls=true|false"
}

func newAuthServer(t *testing.T) *authServer {
	a := &authServer{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		a.mu.Lock()
		a.asks = append(a.asks, q.Get("secret")+" tls="+q.Get("tls"))
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"ttl":3600,"identity":"bridge","authorizations":[{"permissions":["subscribe","publish"],"topic":".*","channels":[".*"]}]}`))
	}))
	t.Cleanup(srv.Close)
	a.addr = strings.TrimPrefix(srv.URL, "http://")
	return a
}

func (a *authServer) seen() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.asks...)
}

// consumeOne connects a go-nsq consumer configured as the bridge configures it (Validate, then
// nsqConfig) and, when that succeeds, waits for one message published in-process. It returns
// whether nsqd reports the client connection as TLS, and the connection error.
func consumeOne(t *testing.T, n *nsqlocal.NSQD, o Options) (clientTLS bool, connErr error) {
	t.Helper()
	o.NSQDTCPAddresses, o.Topic, o.Stream = []string{n.TCPAddr}, "tls", "unused"
	if err := o.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	cfg, err := nsqConfig(&o)
	if err != nil {
		t.Fatalf("nsqConfig: %v", err)
	}
	c, err := nsq.NewConsumer(o.Topic, o.Channel, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetLogger(nil, nsq.LogLevelError)
	got := make(chan string, 1)
	c.AddHandler(nsq.HandlerFunc(func(m *nsq.Message) error {
		select {
		case got <- string(m.Body):
		default:
		}
		return nil
	}))
	defer func() {
		c.Stop()
		<-c.StopChan
	}()
	if err := c.ConnectToNSQD(n.TCPAddr); err != nil {
		return false, err
	}
	topic := n.GetTopic(o.Topic)
	if err := topic.PutMessage(nsqd.NewMessage(topic.GenerateID(), []byte("over tls?"))); err != nil {
		t.Fatal(err)
	}
	select {
	case body := <-got:
		if body != "over tls?" {
			t.Errorf("received %q", body)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no message within 30s on a connected consumer")
	}
	for _, ts := range n.GetStats(o.Topic, o.Channel, true).Topics {
		for _, cs := range ts.Channels {
			for _, cl := range cs.Clients {
				if v2, ok := cl.(nsqd.ClientV2Stats); ok && v2.TLS {
					clientTLS = true
				}
			}
		}
	}
	return clientTLS, nil
}

// --tls against the embedded nsqd: TLS or an error, never plaintext; the AUTH secret only over
// TLS; CA, client certificate and key given as PEM content.
func TestTLSAgainstEmbeddedNSQD(t *testing.T) {
	localtest.SkipShort(t, "nsqd")
	good, other := newPKI(t, "good"), newPKI(t, "other")
	tlsOpts := func(p *pki) Options {
		o := NewOptions()
		o.TLS, o.TLSRootCAPEM = true, p.caPEM
		return o
	}

	t.Run("required, with AUTH over TLS", func(t *testing.T) {
		auth := newAuthServer(t)
		no := good.nsqdOptions(t)
		no.TLSRequired, no.AuthHTTPAddresses = true, []string{auth.addr}
		n := localtest.NSQD(t, no)
		o := tlsOpts(good)
		o.AuthSecret = "s3cret"
		isTLS, err := consumeOne(t, n, o)
		if err != nil || !isTLS {
			t.Fatalf("connect: %v, TLS per nsqd %v; want a TLS connection", err, isTLS)
		}
		if got := auth.seen(); len(got) == 0 || got[0] != "s3cret tls=true" {
			t.Errorf("auth server was asked %q, want the secret over TLS", got)
		}
	})
	t.Run("optional", func(t *testing.T) {
		n := localtest.NSQD(t, good.nsqdOptions(t))
		isTLS, err := consumeOne(t, n, tlsOpts(good))
		if err != nil || !isTLS {
			t.Fatalf("connect: %v, TLS per nsqd %v; want a TLS connection", err, isTLS)
		}
	})
	t.Run("plaintext nsqd is refused before AUTH", func(t *testing.T) {
		auth := newAuthServer(t)
		n := localtest.NSQD(t, nsqlocal.Options{AuthHTTPAddresses: []string{auth.addr}})
		o := tlsOpts(good)
		o.AuthSecret = "s3cret"
		_, err := consumeOne(t, n, o)
		if err == nil || !strings.Contains(err.Error(), "did not negotiate") {
			t.Fatalf("connect: %v, want a refusal (nsqd does not negotiate TLS)", err)
		}
		if got := auth.seen(); len(got) != 0 {
			t.Errorf("the secret reached nsqd's auth server: %q", got)
		}
	})
	t.Run("wrong CA is refused", func(t *testing.T) {
		n := localtest.NSQD(t, good.nsqdOptions(t))
		_, err := consumeOne(t, n, tlsOpts(other))
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("connect: %v, want a certificate verification error", err)
		}
	})
	t.Run("client certificate, require-verify", func(t *testing.T) {
		no := good.nsqdOptions(t)
		no.TLSClientAuthPolicy = "require-verify"
		n := localtest.NSQD(t, no)
		o := tlsOpts(good)
		o.TLSCertPEM, o.TLSKeyPEM = good.clientCert, good.clientKey
		if isTLS, err := consumeOne(t, n, o); err != nil || !isTLS {
			t.Fatalf("with the client certificate: %v, TLS per nsqd %v; want a TLS connection", err, isTLS)
		}
		if _, err := consumeOne(t, n, tlsOpts(good)); err == nil {
			t.Error("without a client certificate: connected, want a refusal")
		}
		o.TLSCertPEM, o.TLSKeyPEM = other.clientCert, other.clientKey
		if _, err := consumeOne(t, n, o); err == nil {
			t.Error("with a certificate from another CA: connected, want a refusal")
		}
	})
}
