package bridge

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nsqk/nsqk/shared/kpl"
)

// Ordering selects how much the bridge may reorder records of one key between NSQ and Kinesis.
type Ordering string

const (
	// Strict keeps per-key order through retries: at most one PutRecords entry in flight per lane
	// (shard, key bucket), and a failed entry is retried before anything newer of that lane is sent.
	Strict Ordering = "strict"
	// Relaxed sends every sealed aggregate as soon as a request slot is free; retries may overtake.
	Relaxed Ordering = "relaxed"
)

// LatePolicy says what to do with a redelivered message (Attempts > 1) older, by NSQ publish
// timestamp, than one of its key that the bridge has already accepted: after a crash, a timeout or
// a requeue NSQ puts it behind newer messages, and writing it would put it after newer records of
// its key.
type LatePolicy string

const (
	LateDeadLetter LatePolicy = "dead-letter" // keep the stream in per-key order (strict's default)
	LateWrite      LatePolicy = "write"       // write it anyway, counted (relaxed's default)
)

// RecordKeys says which keys each user record inside an aggregate carries.
type RecordKeys string

const (
	// RecordKeysUser: every user record carries its own partition key (KPL behaviour; consumers
	// and tools see each message's key).
	RecordKeysUser RecordKeys = "user"
	// RecordKeysLane: user records share the lane's partition key and explicit hash key, one
	// key-table entry per aggregate: ~12 bytes less per message with 10-character keys.
	// Consumers read the key from the payload. The explicit hash key keeps KCL-style shard
	// hash-range filters satisfied.
	RecordKeysLane RecordKeys = "lane"
)

// MissingKeyPolicy says what to do with a message whose partition key field is absent or unusable.
type MissingKeyPolicy string

const (
	MissingKeyDeadLetter MissingKeyPolicy = "dead-letter" // the default: the message goes to the dead-letter topic
	MissingKeyFixed      MissingKeyPolicy = "fixed"       // use Options.FixedKey
	MissingKeyRandom     MissingKeyPolicy = "random"      // spread over shards; no order for these
)

// Options configures a Bridge. NewOptions returns the defaults; the bridge binary maps each field
// to a flag and an environment variable.
type Options struct {
	// NSQ input.
	NSQDTCPAddresses     []string
	LookupdHTTPAddresses []string
	// NSQDHTTPAddresses are polled for the channel backlog gauge when connecting to nsqd directly
	// (with lookupd the HTTP addresses come from the lookup).
	NSQDHTTPAddresses     []string
	Topic                 string
	Channel               string
	MaxInFlight           int
	MsgTimeout            time.Duration // asked of nsqd in IDENTIFY; Touch happens at half of it
	MaxAttempts           uint16        // a message delivered more often is dead-lettered; 0 = no limit
	DeadLetterTopic       string        // default <topic>_dead
	DeadLetterMaxSize     int           // envelopes larger than this carry a truncated body (nsqd's --max-msg-size)
	ConsumerOpts          []string      // extra go-nsq options, "name=value" (as nsq_to_* --consumer-opt)
	TLS                   bool
	TLSInsecureSkipVerify bool
	TLSRootCAFile         string
	TLSCert, TLSKey       string
	AuthSecret            string
	// The TLS files' content as PEM, for a platform that can pass secrets only as environment
	// variables (each excludes its file option).
	TLSRootCAPEM, TLSCertPEM, TLSKeyPEM string
	AllowPlaintextAuth                  bool // send AuthSecret without TLS

	// Partition key.
	PartitionKey    string // gjson path into the JSON body
	MissingKey      MissingKeyPolicy
	FixedKey        string
	AllowNumericKey bool // accept JSON numbers as keys (their literal text)
	MaxJSONDepth    int

	// Kinesis output.
	Stream              string
	KeyBuckets          int
	RecordKeys          RecordKeys
	Ordering            Ordering
	LateRedelivery      LatePolicy    // "" = dead-letter in strict mode, write in relaxed mode
	LateWindow          time.Duration // how long a key's newest timestamp is remembered after the key was last seen
	LateWindowMemoryMiB int           // memory budget of those timestamps; keys beyond it are forgotten early
	WrittenWindow       time.Duration // how long a written message is remembered, to recognise a redelivery whose FIN was lost
	WrittenMemoryMiB    int           // memory budget of the written messages; beyond it they are forgotten early
	MaxBufferedTime     time.Duration
	MaxRecordSize       int // 0: read from DescribeStreamSummary (default 1 MiB)
	MaxRequestsInFlight int
	PutTimeout          time.Duration
	RetryInitial        time.Duration
	RetryMax            time.Duration
	ShardRefresh        time.Duration
	ReshardSettle       time.Duration // new shards' lanes wait this long before their first write
	ReshardQuiet        time.Duration // a key misplaced by a reshard stays on that shard until quiet this long

	// Lifecycle.
	ShutdownTimeout time.Duration
	BacklogInterval time.Duration
	// UnhealthyAfter turns /healthz unhealthy once the bridge has had no nsqd connection this
	// long (0 = never), so that the orchestrator replaces a bridge that cannot reach NSQ.
	UnhealthyAfter time.Duration

	// Metrics. Prometheus series go to the registerer given to New; with EMFOutput set the bridge
	// also writes CloudWatch Embedded Metric Format lines (namespace NSQK/Bridge, dimension
	// Stream, and Route when Route is set) to it every EMFInterval.
	EMFOutput   io.Writer
	EMFInterval time.Duration
	// Route names this bridge among several in one process: the EMF dimension Route. Empty, the
	// EMF metrics carry Stream alone, as alarms on a single-topic bridge expect.
	Route string

	// NSQDPartition makes the bridge read only the nsqd nodes (found through nsqlookupd) that its
	// index owns; the zero value reads every node.
	NSQDPartition Partition
}

// NewOptions returns the defaults.
func NewOptions() Options {
	return Options{
		Channel:             "nsqk",
		MaxInFlight:         2500,
		MsgTimeout:          60 * time.Second,
		MaxAttempts:         5,
		DeadLetterMaxSize:   1 << 20,
		PartitionKey:        "user_id",
		MissingKey:          MissingKeyDeadLetter,
		MaxJSONDepth:        64,
		KeyBuckets:          1,
		RecordKeys:          RecordKeysUser,
		Ordering:            Strict,
		LateWindow:          15 * time.Minute,
		LateWindowMemoryMiB: 128,
		WrittenWindow:       5 * time.Minute,
		WrittenMemoryMiB:    64,
		MaxBufferedTime:     100 * time.Millisecond,
		MaxRequestsInFlight: 16,
		PutTimeout:          30 * time.Second,
		RetryInitial:        100 * time.Millisecond,
		RetryMax:            5 * time.Second,
		ShardRefresh:        30 * time.Second,
		ReshardSettle:       5 * time.Second,
		ReshardQuiet:        5 * time.Minute,
		ShutdownTimeout:     25 * time.Second,
		BacklogInterval:     15 * time.Second,
		UnhealthyAfter:      5 * time.Minute,
		EMFInterval:         time.Minute,
	}
}

// Validate checks the options and fills derived defaults.
func (o *Options) Validate() error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	if len(o.NSQDTCPAddresses) == 0 && len(o.LookupdHTTPAddresses) == 0 {
		bad("one of --nsqd-tcp-address or --lookupd-http-address is required")
	}
	if len(o.NSQDTCPAddresses) > 0 && len(o.LookupdHTTPAddresses) > 0 {
		bad("use --nsqd-tcp-address or --lookupd-http-address, not both")
	}
	if o.Topic == "" {
		bad("--topic is required")
	}
	if o.Channel == "" {
		bad("--channel is required")
	}
	if o.Stream == "" {
		bad("--stream is required")
	}
	if o.DeadLetterTopic == "" && o.Topic != "" {
		o.DeadLetterTopic = o.Topic + "_dead"
	}
	if o.DeadLetterTopic == o.Topic && o.Topic != "" {
		bad("--dead-letter-topic must differ from --topic")
	}
	if o.DeadLetterMaxSize < 4096 {
		bad("--dead-letter-max-size must be at least 4096")
	}
	if o.PartitionKey == "" {
		bad("--partition-key is required")
	}
	switch o.MissingKey {
	case MissingKeyDeadLetter, MissingKeyRandom:
	case MissingKeyFixed:
		if reason, detail := checkKey(o.FixedKey); reason != "" {
			bad("--missing-key=fixed needs a usable --fixed-key: %s", detail)
		}
	default:
		bad("--missing-key must be dead-letter, fixed or random")
	}
	switch o.Ordering {
	case Strict, Relaxed:
	default:
		bad("--ordering must be strict or relaxed")
	}
	switch o.RecordKeys {
	case RecordKeysUser, RecordKeysLane:
	default:
		bad("--record-keys must be user or lane")
	}
	switch o.LateRedelivery {
	case "":
		o.LateRedelivery = LateDeadLetter
		if o.Ordering == Relaxed {
			o.LateRedelivery = LateWrite
		}
	case LateDeadLetter, LateWrite:
	default:
		bad("--late-redelivery must be dead-letter or write")
	}
	if o.LateWindow < time.Second || o.LateWindow < o.MsgTimeout {
		bad("--late-window must be at least 1s and at least --msg-timeout: a crashed bridge's messages come back one timeout later, and their keys must still be known")
	}
	if o.WrittenWindow < o.MsgTimeout {
		bad("--written-window must be at least --msg-timeout: nsqd redelivers a message whose FIN was lost after its timeout")
	}
	if o.LateWindowMemoryMiB < 1 || o.WrittenMemoryMiB < 1 {
		bad("--late-window-memory-mib and --written-memory-mib must be at least 1")
	}
	if o.KeyBuckets < 1 || o.KeyBuckets > 10000 {
		bad("--key-buckets must be 1..10000")
	}
	if o.MaxInFlight < 1 {
		bad("--max-in-flight must be at least 1")
	}
	if o.MaxBufferedTime <= 0 {
		bad("--max-buffered-time must be positive")
	}
	if o.MsgTimeout < time.Second {
		bad("--msg-timeout must be at least 1s")
	}
	if o.MaxRecordSize < 0 || (o.MaxRecordSize > 0 && o.MaxRecordSize < 1024) || o.MaxRecordSize > maxRequestBytes {
		bad("--max-record-size must be 0 (from the stream) or 1024..%d (what one PutRecords request takes)", maxRequestBytes)
	}
	if o.MaxRequestsInFlight < 1 {
		bad("--max-requests-in-flight must be at least 1")
	}
	if o.MaxJSONDepth < 1 {
		bad("--max-json-depth must be at least 1")
	}
	if o.RetryInitial <= 0 || o.RetryMax < o.RetryInitial {
		bad("retry intervals must satisfy 0 < initial <= max")
	}
	if o.ReshardQuiet < time.Second {
		bad("--reshard-quiet must be at least 1s")
	}
	if o.ReshardSettle < 0 {
		bad("--reshard-settle must not be negative")
	}
	if o.ShutdownTimeout <= 0 || o.ShardRefresh <= 0 || o.PutTimeout <= 0 {
		bad("--shutdown-timeout, --shard-refresh and --put-timeout must be positive")
	}
	if o.UnhealthyAfter < 0 {
		bad("--unhealthy-after must not be negative (0 = never)")
	}
	if o.EMFOutput != nil && o.EMFInterval <= 0 {
		bad("--emf-interval must be positive")
	}
	if err := o.NSQDPartition.validate(len(o.LookupdHTTPAddresses) > 0); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, o.validateTLS()...)
	return errors.Join(errs...)
}

func (o *Options) maxRecordSize() int {
	if o.MaxRecordSize > 0 {
		return o.MaxRecordSize
	}
	return kpl.DefaultMaxRecordSize
}

func (o *Options) streamIsARN() bool { return strings.HasPrefix(o.Stream, "arn:") }
