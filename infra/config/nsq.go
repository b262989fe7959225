package config

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// NSQConfig says where the bridge reads from.
type NSQConfig struct {
	LookupdHTTPAddresses []string // exactly one of these two lists is set
	NsqdTCPAddresses     []string
	NsqdHTTPAddresses    []string // optional with NsqdTCPAddresses: polled for the NSQBacklog gauge
	Topic                string
	Channel              string
	DeadLetterTopic      string // optional
	AuthSecretArn        string // optional: complete Secrets Manager ARN of the NSQ auth secret
	AuthSecretKmsKeyArn  string // optional: the CMK that encrypts that secret (grants kms:Decrypt)
	TLS                  bool
	NsqdPorts            []int // with lookupd: the nsqd TCP and HTTP ports lookupd will name (security group egress)

	AllowPlaintextAuth bool       // the user accepts the auth secret crossing the network without TLS
	TLSSecrets         TLSSecrets // optional: CA, client certificate and key as PEM in Secrets Manager
}

// Ports are the TCP ports the bridge connects to on NSQ hosts: those of the configured addresses,
// and with lookupd the nsqd ports it names.
func (n NSQConfig) Ports() []int {
	ports := slices.Clone(n.NsqdPorts)
	for _, l := range [][]string{n.LookupdHTTPAddresses, n.NsqdTCPAddresses, n.NsqdHTTPAddresses} {
		for _, a := range l {
			if _, p, err := net.SplitHostPort(a); err == nil {
				if n, err := strconv.Atoi(p); err == nil {
					ports = append(ports, n)
				}
			}
		}
	}
	slices.Sort(ports)
	return slices.Compact(ports)
}

var (
	reNSQName   = regexp.MustCompile(`^[.a-zA-Z0-9_-]{1,64}$`)
	reSecretArn = regexp.MustCompile(`^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$`)
	reKmsKeyArn = regexp.MustCompile(`^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$`)
)

// parseNSQ reads the context keys of where the bridge reads from.
func parseNSQ(p *parser, c *Config) {
	n := &c.NSQ
	n.LookupdHTTPAddresses = p.list(KeyLookupdHTTP)
	n.NsqdTCPAddresses = p.list(KeyNsqdTCP)
	switch {
	case len(n.LookupdHTTPAddresses) == 0 && len(n.NsqdTCPAddresses) == 0:
		p.fail(KeyLookupdHTTP, "set the nsqlookupd HTTP addresses (host:port, comma-separated) or %q", KeyNsqdTCP)
	case len(n.LookupdHTTPAddresses) > 0 && len(n.NsqdTCPAddresses) > 0:
		p.fail(KeyNsqdTCP, "set either %q or %q, not both", KeyLookupdHTTP, KeyNsqdTCP)
	}
	n.NsqdHTTPAddresses = p.list(KeyNsqdHTTP)
	if len(n.NsqdHTTPAddresses) > 0 && len(n.NsqdTCPAddresses) == 0 {
		p.fail(KeyNsqdHTTP, "only valid with %q (with lookupd the bridge finds the nsqd HTTP addresses itself)", KeyNsqdTCP)
	}
	for _, l := range []struct {
		key   string
		addrs []string
	}{{KeyLookupdHTTP, n.LookupdHTTPAddresses}, {KeyNsqdTCP, n.NsqdTCPAddresses}, {KeyNsqdHTTP, n.NsqdHTTPAddresses}} {
		for _, a := range l.addrs {
			if err := validHostPort(a); err != nil {
				p.fail(l.key, "%v", err)
			}
		}
	}
	n.Topic = p.str(KeyTopic, "")
	if n.Topic == "" && p.has(KeyRoutes) {
		// Each route names its topic.
	} else if n.Topic == "" {
		p.fail(KeyTopic, "the NSQ topic to bridge is required")
	} else if !reNSQName.MatchString(strings.TrimSuffix(n.Topic, "#ephemeral")) {
		p.fail(KeyTopic, "%q is not a valid NSQ topic name (1-64 of [.a-zA-Z0-9_-])", n.Topic)
	}
	// One bridge per channel: two stacks on the same channel would each get part of the messages.
	n.Channel = p.str(KeyChannel, c.StackName+"-kinesis")
	switch {
	case strings.HasSuffix(n.Channel, "#ephemeral"):
		p.fail(KeyChannel, "%q is ephemeral: nsqd drops its messages while no bridge is connected; use a durable channel", n.Channel)
	case !reNSQName.MatchString(n.Channel):
		p.fail(KeyChannel, "%q is not a valid NSQ channel name (1-64 of [.a-zA-Z0-9_-])", n.Channel)
	}
	n.DeadLetterTopic = p.str(KeyDeadLetterTopic, "")
	if n.DeadLetterTopic != "" {
		if !reNSQName.MatchString(n.DeadLetterTopic) {
			p.fail(KeyDeadLetterTopic, "%q is not a valid NSQ topic name", n.DeadLetterTopic)
		}
		if n.DeadLetterTopic == n.Topic {
			p.fail(KeyDeadLetterTopic, "must differ from %q (dead letters would loop back into the bridge)", KeyTopic)
		}
	}
	n.AuthSecretArn = p.str(KeyAuthSecretArn, "")
	if n.AuthSecretArn != "" && !reSecretArn.MatchString(n.AuthSecretArn) {
		p.fail(KeyAuthSecretArn, "%q is not a complete Secrets Manager secret ARN (arn:aws:secretsmanager:<region>:<account>:secret:<name>-<6 characters>); the 6-character suffix is needed to grant access to exactly that secret", n.AuthSecretArn)
	}
	n.AuthSecretKmsKeyArn = p.str(KeyAuthSecretKmsKeyArn, "")
	if n.AuthSecretKmsKeyArn != "" {
		if n.AuthSecretArn == "" {
			p.fail(KeyAuthSecretKmsKeyArn, "only valid together with %q", KeyAuthSecretArn)
		}
		if !reKmsKeyArn.MatchString(n.AuthSecretKmsKeyArn) {
			p.fail(KeyAuthSecretKmsKeyArn, "%q is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)", n.AuthSecretKmsKeyArn)
		}
	}
	n.TLS = p.boolean(KeyTLS, false)
	parseNSQSecurity(p, n)
	parseNsqdPorts(p, n)
}

// parseNsqdPorts reads the nsqd ports the bridge's security group must reach when lookupd names
// the nsqd hosts (nsqd's defaults: 4150 TCP, 4151 HTTP for the backlog poll).
func parseNsqdPorts(p *parser, n *NSQConfig) {
	if len(n.LookupdHTTPAddresses) == 0 {
		if p.has(KeyNsqdPorts) {
			p.fail(KeyNsqdPorts, "only valid with %q (with %q the ports come from the addresses)", KeyLookupdHTTP, KeyNsqdTCP)
		}
		return
	}
	n.NsqdPorts = []int{4150, 4151}
	var ports []int
	if !p.value(KeyNsqdPorts, &ports) {
		return
	}
	n.NsqdPorts = nil
	for _, port := range ports {
		if port < 1 || port > 65535 {
			p.fail(KeyNsqdPorts, "%d is not a TCP port", port)
			continue
		}
		n.NsqdPorts = append(n.NsqdPorts, port)
	}
	if len(n.NsqdPorts) == 0 {
		p.fail(KeyNsqdPorts, "name the nsqd TCP and HTTP ports lookupd returns (for example 4150,4151)")
	}
}

func validHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", s, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q has an invalid port", s)
	}
	return nil
}
