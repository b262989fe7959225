package bridge

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nsqio/go-nsq"
)

// Envelope is what the dead-letter topic receives: the original message and why it was not written
// to Kinesis. Body holds the original body when it is valid UTF-8, BodyBase64 otherwise.
type Envelope struct {
	Reason       Reason    `json:"reason"`
	Detail       string    `json:"detail"`
	Topic        string    `json:"topic"`
	Channel      string    `json:"channel"`
	MessageID    string    `json:"message_id"`
	Attempts     uint16    `json:"attempts"`
	Timestamp    time.Time `json:"timestamp"` // NSQ publish time of the original message
	DeadLettered time.Time `json:"dead_lettered_at"`
	NSQDAddress  string    `json:"nsqd_address,omitempty"`
	Body         *string   `json:"body,omitempty"`
	BodyBase64   []byte    `json:"body_base64,omitempty"`
	// A body that would make the envelope larger than --dead-letter-max-size (nsqd refuses a
	// message over its --max-msg-size) is truncated; these then describe the original.
	BodyTruncated bool   `json:"body_truncated,omitempty"`
	BodySize      int    `json:"body_size,omitempty"`
	BodySHA256    string `json:"body_sha256,omitempty"`
}

// deadLetterRetryDelay is how long a message whose dead-letter publish failed waits in NSQ.
const deadLetterRetryDelay = 5 * time.Second

// deadLetterer publishes envelopes to the dead-letter topic on the nsqd the message came from, and
// FINs the original only once nsqd has accepted the envelope.
type deadLetterer struct {
	topic, channel, dlTopic string
	maxSize                 int
	cfg                     *nsq.Config
	log                     *slog.Logger
	m                       *metrics
	release                 func(m *nsq.Message, fin bool, cause string, delay time.Duration) // FIN or REQ a held message

	mu        sync.Mutex
	producers map[string]*nsq.Producer
	done      chan *nsq.ProducerTransaction
	wg        sync.WaitGroup
	pending   sync.WaitGroup
}

func newDeadLetterer(o *Options, cfg *nsq.Config, log *slog.Logger, m *metrics, release func(*nsq.Message, bool, string, time.Duration)) *deadLetterer {
	d := &deadLetterer{topic: o.Topic, channel: o.Channel, dlTopic: o.DeadLetterTopic, maxSize: o.DeadLetterMaxSize, cfg: cfg, log: log, m: m,
		release: release, producers: map[string]*nsq.Producer{}, done: make(chan *nsq.ProducerTransaction, 1024)}
	d.wg.Add(1)
	go d.loop()
	return d
}

func envelopeFor(m *nsq.Message, topic, channel string, reason Reason, detail string, now time.Time) Envelope {
	env := Envelope{Reason: reason, Detail: detail, Topic: topic, Channel: channel,
		MessageID: hex.EncodeToString(m.ID[:]), Attempts: m.Attempts, Timestamp: time.Unix(0, m.Timestamp).UTC(),
		DeadLettered: now.UTC(), NSQDAddress: m.NSQDAddress}
	// NSQ message ids are 16 ASCII hex characters on the wire; show them as such when they are.
	if isPrintable(m.ID[:]) {
		env.MessageID = string(m.ID[:])
	}
	if utf8.Valid(m.Body) {
		s := string(m.Body)
		env.Body = &s
	} else {
		env.BodyBase64 = m.Body
	}
	return env
}

// fitEnvelope encodes env, truncating the body if the envelope would be larger than limit: nsqd
// refuses a message over its --max-msg-size, and a dead letter that cannot be published would be
// requeued forever.
func fitEnvelope(env Envelope, body []byte, limit int) ([]byte, error) {
	b, err := json.Marshal(env)
	if err != nil || len(b) <= limit {
		return b, err
	}
	sum := sha256.Sum256(body)
	env.BodyTruncated, env.BodySize, env.BodySHA256 = true, len(body), hex.EncodeToString(sum[:])
	keep := len(body)
	for len(b) > limit && keep > 0 {
		keep = int(int64(keep) * int64(limit) / int64(len(b)) * 9 / 10)
		part := body[:keep]
		env.Body, env.BodyBase64 = nil, nil
		if utf8.Valid(body) {
			for len(part) > 0 && !utf8.Valid(part) { // cut at a character boundary
				part = part[:len(part)-1]
			}
			s := string(part)
			env.Body = &s
		} else {
			env.BodyBase64 = part
		}
		if b, err = json.Marshal(env); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func isPrintable(b []byte) bool {
	for _, c := range b {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

// send publishes the envelope asynchronously; the message stays held until nsqd answers.
func (d *deadLetterer) send(m *nsq.Message, reason Reason, detail string) {
	body, err := fitEnvelope(envelopeFor(m, d.topic, d.channel, reason, detail, time.Now()), m.Body, d.maxSize)
	if err != nil { // cannot happen for this struct; keep the message rather than lose it
		d.fail(m, reason, fmt.Errorf("encode envelope: %w", err))
		return
	}
	p, err := d.producer(m.NSQDAddress)
	if err == nil {
		d.pending.Add(1)
		if err = p.PublishAsync(d.dlTopic, body, d.done, m, reason, detail); err != nil {
			d.pending.Done()
		}
	}
	if err != nil {
		d.fail(m, reason, err)
	}
}

func (d *deadLetterer) producer(addr string) (*nsq.Producer, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p, ok := d.producers[addr]; ok {
		return p, nil
	}
	p, err := nsq.NewProducer(addr, d.cfg)
	if err != nil {
		return nil, err
	}
	p.SetLogger(nsqLogger{d.log}, nsq.LogLevelWarning)
	d.producers[addr] = p
	return p, nil
}

func (d *deadLetterer) loop() {
	defer d.wg.Done()
	for t := range d.done {
		m := t.Args[0].(*nsq.Message)
		reason, detail := t.Args[1].(Reason), t.Args[2].(string)
		if t.Error != nil {
			d.fail(m, reason, t.Error)
		} else {
			d.m.deadLetter(reason)
			d.log.Warn("message dead-lettered", "reason", reason, "detail", detail, "message_id", string(m.ID[:]),
				"attempts", m.Attempts, "dead_letter_topic", d.dlTopic, "bytes", len(m.Body))
			d.release(m, true, "", 0)
		}
		d.pending.Done()
	}
}

func (d *deadLetterer) fail(m *nsq.Message, reason Reason, err error) {
	d.m.deadLetterFail.Inc()
	d.log.Error("dead-letter publish failed; message requeued", "reason", reason, "message_id", string(m.ID[:]),
		"dead_letter_topic", d.dlTopic, "err", err, "requeue_delay", deadLetterRetryDelay)
	d.release(m, false, "dead_letter_failed", deadLetterRetryDelay)
}

// close waits for outstanding publishes and stops the producers.
func (d *deadLetterer) close() {
	d.pending.Wait()
	d.mu.Lock()
	for _, p := range d.producers {
		p.Stop()
	}
	d.mu.Unlock()
	close(d.done)
	d.wg.Wait()
}

// nsqLogger routes go-nsq's line logger into slog.
type nsqLogger struct{ l *slog.Logger }

func (n nsqLogger) Output(_ int, s string) error {
	if len(s) >= 3 && s[:3] == "ERR" {
		n.l.Error(s, "component", "go-nsq")
	} else {
		n.l.Warn(s, "component", "go-nsq")
	}
	return nil
}
