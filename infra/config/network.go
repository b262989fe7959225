package config

import (
	"net"
	"regexp"
)

// NetworkConfig chooses between importing a VPC (VpcID set) and creating one.
type NetworkConfig struct {
	VpcID              string   // import when set
	SubnetIDs          []string // private subnets (with a route to NSQ and AWS APIs) for the bridge
	AvailabilityZones  []string // import: the subnets' AZs; create: optional explicit AZs
	Cidr               string   // create only
	MaxAZs             int      // create only
	NatGateways        int      // create only; MaxAZs = one per availability zone
	InterfaceEndpoints bool     // create only: Kinesis, ECR, CloudWatch Logs, Secrets Manager and KMS endpoints
}

// Imported reports whether an existing VPC is used.
func (n NetworkConfig) Imported() bool { return n.VpcID != "" }

var (
	reVpcID    = regexp.MustCompile(`^vpc-[0-9a-f]{8,17}$`)
	reSubnetID = regexp.MustCompile(`^subnet-[0-9a-f]{8,17}$`)
	reAZ       = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d[a-z]$`)
)

// parseNetwork reads the context keys of the VPC: imported or created.
func parseNetwork(p *parser, c *Config) {
	n := &c.Network
	n.VpcID = p.str(KeyVpcID, "")
	n.SubnetIDs = p.list(KeyVpcSubnetIDs)
	n.AvailabilityZones = p.list(KeyVpcAZs)
	for _, az := range n.AvailabilityZones {
		if !reAZ.MatchString(az) {
			p.fail(KeyVpcAZs, "%q is not an availability zone name such as eu-west-1a", az)
		}
	}
	if n.Imported() {
		parseImportedNetwork(p, n)
		return
	}
	if len(n.SubnetIDs) > 0 {
		p.fail(KeyVpcSubnetIDs, "only valid together with %q", KeyVpcID)
	}
	n.Cidr = p.str(KeyVpcCidr, "10.80.0.0/16")
	if _, ipn, err := net.ParseCIDR(n.Cidr); err != nil || ipn.IP.To4() == nil {
		p.fail(KeyVpcCidr, "%q is not an IPv4 CIDR", n.Cidr)
	} else if ones, _ := ipn.Mask.Size(); ones < 16 || ones > 18 {
		p.fail(KeyVpcCidr, "%q: use a /16 to /18 block (each AZ gets a /24 public and a /22 private subnet)", n.Cidr)
	}
	n.MaxAZs = p.integer(KeyVpcMaxAZs, 2, 1, 6)
	if len(n.AvailabilityZones) > 0 {
		n.MaxAZs = len(n.AvailabilityZones)
		if p.has(KeyVpcMaxAZs) {
			p.fail(KeyVpcMaxAZs, "set either %q or %q", KeyVpcMaxAZs, KeyVpcAZs)
		}
	}
	n.NatGateways = p.integer(KeyVpcNatGateways, 1, 1, 6)
	if n.NatGateways > n.MaxAZs {
		p.fail(KeyVpcNatGateways, "%d NAT gateways for %d availability zones", n.NatGateways, n.MaxAZs)
	}
	n.InterfaceEndpoints = p.boolean(KeyVpcEndpoints, true)
}

func parseImportedNetwork(p *parser, n *NetworkConfig) {
	if !reVpcID.MatchString(n.VpcID) {
		p.fail(KeyVpcID, "%q is not a VPC id (vpc-0123456789abcdef0)", n.VpcID)
	}
	if len(n.SubnetIDs) == 0 {
		p.fail(KeyVpcSubnetIDs, "required with %q: the private subnets the bridge runs in (they need a route to NSQ and to the Kinesis, ECR, CloudWatch Logs and Secrets Manager endpoints)", KeyVpcID)
	}
	for _, s := range n.SubnetIDs {
		if !reSubnetID.MatchString(s) {
			p.fail(KeyVpcSubnetIDs, "%q is not a subnet id (subnet-0123456789abcdef0)", s)
		}
	}
	if len(n.AvailabilityZones) == 0 {
		p.fail(KeyVpcAZs, "required with %q: one availability zone per subnet, in the same order", KeyVpcID)
	} else if len(n.SubnetIDs)%len(n.AvailabilityZones) != 0 {
		p.fail(KeyVpcAZs, "%d subnets do not spread evenly over %d availability zones", len(n.SubnetIDs), len(n.AvailabilityZones))
	}
	for _, k := range []string{KeyVpcCidr, KeyVpcMaxAZs, KeyVpcNatGateways, KeyVpcEndpoints} {
		if p.has(k) {
			p.fail(k, "only valid when the stack creates the VPC (no %q)", KeyVpcID)
		}
	}
}
