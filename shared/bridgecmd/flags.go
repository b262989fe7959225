package bridgecmd

import (
	"flag"
	"strconv"
	"strings"

	"github.com/nsqk/nsqk/shared/bridge"
)

// stringList is a repeatable flag (also fed from a comma-separated environment variable).
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// bridgeFlags defines the flags of bridge.Options on fs, bound to o (whose current values are the
// defaults). The names follow NSQ's own tools; each is also read from NSQK_<NAME> (upper case,
// dashes as underscores).
func bridgeFlags(fs *flag.FlagSet, o *bridge.Options) {
	fs.Var((*stringList)(&o.NSQDTCPAddresses), "nsqd-tcp-address", "nsqd TCP address (repeatable)")
	fs.Var((*stringList)(&o.LookupdHTTPAddresses), "lookupd-http-address", "nsqlookupd HTTP address (repeatable)")
	fs.Func("nsqd-partition", "i/N: read only the nsqd nodes (from --lookupd-http-address) whose rendezvous hash of their address picks i, one of N bridges splitting a topic by node", func(s string) error {
		p, err := bridge.ParsePartition(s)
		o.NSQDPartition = p
		return err
	})
	fs.Var((*stringList)(&o.NSQDHTTPAddresses), "nsqd-http-address", "nsqd HTTP address polled for the backlog gauge when using --nsqd-tcp-address (repeatable)")
	fs.StringVar(&o.Topic, "topic", o.Topic, "NSQ topic to consume (required)")
	fs.StringVar(&o.Channel, "channel", o.Channel, "NSQ channel to consume")
	fs.IntVar(&o.MaxInFlight, "max-in-flight", o.MaxInFlight, "NSQ messages held at most (RDY); nsqd caps it per connection at its --max-rdy-count")
	fs.DurationVar(&o.MsgTimeout, "msg-timeout", o.MsgTimeout, "message timeout asked of nsqd; held messages are TOUCHed at half of it")
	fs.Func("max-attempts", "dead-letter a message delivered more than this many times (0 = no limit) (default 5)", func(s string) error {
		return parseUint16(s, &o.MaxAttempts)
	})
	fs.StringVar(&o.DeadLetterTopic, "dead-letter-topic", o.DeadLetterTopic, "NSQ topic for messages that cannot be written (default <topic>_dead)")
	fs.IntVar(&o.DeadLetterMaxSize, "dead-letter-max-size", o.DeadLetterMaxSize, "largest dead-letter envelope in bytes (nsqd's --max-msg-size): a bigger one carries the body truncated, with its size and SHA-256")
	fs.Var((*stringList)(&o.ConsumerOpts), "consumer-opt", "extra go-nsq option name=value, as in nsq_to_* tools (repeatable)")
	fs.BoolVar(&o.TLS, "tls", o.TLS, "connect to nsqd with TLS only: a connection nsqd does not upgrade to TLS is an error, never plaintext")
	fs.BoolVar(&o.TLSInsecureSkipVerify, "tls-insecure-skip-verify", o.TLSInsecureSkipVerify, "do not verify nsqd's TLS certificate")
	fs.StringVar(&o.TLSRootCAFile, "tls-root-ca-file", o.TLSRootCAFile, "PEM file of CAs that sign nsqd's certificate")
	fs.StringVar(&o.TLSCert, "tls-cert", o.TLSCert, "client certificate (PEM) for nsqd TLS client auth")
	fs.StringVar(&o.TLSKey, "tls-key", o.TLSKey, "client key (PEM) for nsqd TLS client auth")
	fs.StringVar(&o.AuthSecret, "auth-secret", o.AuthSecret, "nsqd AUTH secret (needs --tls unless --allow-plaintext-auth)")
	fs.StringVar(&o.TLSRootCAPEM, "tls-root-ca-pem", o.TLSRootCAPEM, "PEM content of the CAs that sign nsqd's certificate (instead of --tls-root-ca-file)")
	fs.StringVar(&o.TLSCertPEM, "tls-cert-pem", o.TLSCertPEM, "PEM content of the client certificate for nsqd TLS client auth (instead of --tls-cert)")
	fs.StringVar(&o.TLSKeyPEM, "tls-key-pem", o.TLSKeyPEM, "PEM content of the client key for nsqd TLS client auth (instead of --tls-key)")
	fs.BoolVar(&o.AllowPlaintextAuth, "allow-plaintext-auth", o.AllowPlaintextAuth, "allow --auth-secret without --tls: the secret crosses the network in clear")

	fs.StringVar(&o.PartitionKey, "partition-key", o.PartitionKey, "JSON field path of the partition key (gjson syntax, e.g. user_id or user.id)")
	fs.Func("missing-key", "what to do without a usable key: dead-letter, fixed or random (default dead-letter)", func(s string) error {
		o.MissingKey = bridge.MissingKeyPolicy(s)
		return nil
	})
	fs.StringVar(&o.FixedKey, "fixed-key", o.FixedKey, "partition key used with --missing-key=fixed")
	fs.BoolVar(&o.AllowNumericKey, "allow-numeric-key", o.AllowNumericKey, "accept a JSON number as the key (its literal text)")
	fs.IntVar(&o.MaxJSONDepth, "max-json-depth", o.MaxJSONDepth, "dead-letter bodies nested deeper than this")

	fs.StringVar(&o.Stream, "stream", o.Stream, "Kinesis stream name or ARN (required)")
	fs.IntVar(&o.KeyBuckets, "key-buckets", o.KeyBuckets, "aggregate per (shard, hash(key) mod N) with a stable outer partition key per bucket, for Lambda ParallelizationFactor")
	fs.Func("record-keys", "keys of the user records inside an aggregate: user (each message's own partition key) or lane (one shared key per aggregate, ~12 bytes less per message; consumers read the key from the payload) (default user)", func(s string) error {
		o.RecordKeys = bridge.RecordKeys(s)
		return nil
	})
	fs.Func("ordering", "strict (one entry in flight per lane, retries before newer records) or relaxed (default strict)", func(s string) error {
		o.Ordering = bridge.Ordering(s)
		return nil
	})
	fs.Func("late-redelivery", "a redelivered message older than one already accepted for its key: dead-letter (keeps per-key order) or write (default dead-letter with --ordering=strict, write with relaxed)", func(s string) error {
		o.LateRedelivery = bridge.LatePolicy(s)
		return nil
	})
	fs.DurationVar(&o.LateWindow, "late-window", o.LateWindow, "how long after a key was last seen its newest NSQ timestamp is remembered for --late-redelivery")
	fs.IntVar(&o.LateWindowMemoryMiB, "late-window-memory-mib", o.LateWindowMemoryMiB, "memory budget in MiB of the --late-window timestamps (~38 bytes a key); beyond it the least recently seen keys are forgotten early (nsqk_bridge_memory_evicted_total{memory=\"late_window\"})")
	fs.DurationVar(&o.WrittenWindow, "written-window", o.WrittenWindow, "how long each written message (nsqd address and id) is remembered, so that a redelivery whose FIN was lost is not written again; at least --msg-timeout")
	fs.IntVar(&o.WrittenMemoryMiB, "written-memory-mib", o.WrittenMemoryMiB, "memory budget in MiB of the --written-window memory (~38 bytes a message); beyond it the oldest are forgotten early (nsqk_bridge_memory_evicted_total{memory=\"written\"})")
	fs.DurationVar(&o.MaxBufferedTime, "max-buffered-time", o.MaxBufferedTime, "longest a message waits in an aggregate before it is sent")
	fs.IntVar(&o.MaxRecordSize, "max-record-size", o.MaxRecordSize, "Kinesis record size limit in bytes (data + partition key), at most 10485760 (one PutRecords request); 0 = the stream's, from DescribeStreamSummary")
	fs.IntVar(&o.MaxRequestsInFlight, "max-requests-in-flight", o.MaxRequestsInFlight, "concurrent PutRecords calls")
	fs.DurationVar(&o.PutTimeout, "put-timeout", o.PutTimeout, "timeout of one PutRecords call including SDK retries")
	fs.DurationVar(&o.RetryInitial, "retry-initial", o.RetryInitial, "first backoff after a failed entry (exponential, jittered)")
	fs.DurationVar(&o.RetryMax, "retry-max", o.RetryMax, "longest backoff between retries of an entry")
	fs.DurationVar(&o.ShardRefresh, "shard-refresh", o.ShardRefresh, "shard map refresh interval (also refreshed when a record lands on an unexpected shard)")
	fs.DurationVar(&o.ReshardSettle, "reshard-settle", o.ReshardSettle, "after a reshard, how long the new shards' lanes hold their records so consumers reading the parent's children in parallel see each key in order")
	fs.DurationVar(&o.ReshardQuiet, "reshard-quiet", o.ReshardQuiet, "a key whose record a reshard put on a sibling shard keeps going to that shard until it has been quiet this long")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", o.ShutdownTimeout, "on SIGTERM, how long to flush and wait for Kinesis before requeueing the rest")
	fs.DurationVar(&o.BacklogInterval, "backlog-interval", o.BacklogInterval, "how often nsqd's /stats are polled (channel depth, RDY, other clients on the channel)")
	fs.DurationVar(&o.UnhealthyAfter, "unhealthy-after", o.UnhealthyAfter, "/healthz turns unhealthy after this long without any nsqd connection, so the orchestrator replaces the bridge (0 = never)")
}

func parseUint16(s string, dst *uint16) error {
	v, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return err
	}
	*dst = uint16(v)
	return nil
}
