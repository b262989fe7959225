package config

import "time"

// Where a consumer's event source mapping sends a batch it gives up on (context onFailureDestination).
const (
	// OnFailureSQS keeps a record of the batch (shard, sequence range) in a per-consumer queue: the
	// records themselves must be re-read from the stream while it still retains them.
	OnFailureSQS = "sqs"
	// OnFailureS3 stores the whole invocation record (the batch's data included) in a bucket: it
	// outlives the stream's retention.
	OnFailureS3 = "s3"
)

// OnFailureConfig is the on-failure destination shared by every consumer's mapping.
type OnFailureConfig struct {
	Destination string // OnFailureSQS or OnFailureS3
	ExpiryDays  int    // S3 only: objects expire after this many days
}

// sqsMaxRetention is the longest an SQS queue keeps a message.
const sqsMaxRetention = 14 * 24 * time.Hour

// ExpiryWarning is how long before a failed batch can no longer be re-read that the on-failure
// queue's oldest-message alarm fires: the stream drops the records after its retention, the queue
// drops its record of them after 14 days, whichever comes first.
func (c *Config) ExpiryWarning() time.Duration {
	return min(time.Duration(c.Stream.RetentionHours)*time.Hour, sqsMaxRetention) - expiryMargin
}

// expiryMargin is the time an operator has between the alarm and the loss of the records.
const expiryMargin = 6 * time.Hour

func parseOnFailure(p *parser, c *Config) {
	o := &c.OnFailure
	o.Destination = p.str(KeyOnFailure, OnFailureSQS)
	switch o.Destination {
	case OnFailureSQS:
		if p.has(KeyOnFailureExpiryDays) {
			p.fail(KeyOnFailureExpiryDays, "only valid with %s=%s", KeyOnFailure, OnFailureS3)
		}
	case OnFailureS3:
		o.ExpiryDays = p.integer(KeyOnFailureExpiryDays, 90, 1, 3650)
	default:
		p.fail(KeyOnFailure, "%q: use %q (a record of the failed batch in a queue; re-read the data from the stream within its retention) or %q (the whole batch in a bucket, kept beyond the stream's retention)", o.Destination, OnFailureSQS, OnFailureS3)
	}
}

// ArchiveConfig is the optional copy of every user record to S3 through Amazon Data Firehose.
type ArchiveConfig struct {
	Enabled    bool
	ExpiryDays int // 0 = keep forever
}

func parseArchive(p *parser, c *Config) {
	c.Archive.Enabled = p.boolean(KeyArchive, false)
	if !c.Archive.Enabled {
		if p.has(KeyArchiveExpiryDays) {
			p.fail(KeyArchiveExpiryDays, "only valid with %s=true", KeyArchive)
		}
		return
	}
	c.Archive.ExpiryDays = p.integer(KeyArchiveExpiryDays, 0, 0, 36500)
}
