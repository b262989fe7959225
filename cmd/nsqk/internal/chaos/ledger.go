package chaos

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nsqk/nsqk/shared/bridge"
	"github.com/nsqk/nsqk/shared/location"
)

// MsgKey identifies a location message: its user and its per-user sequence number.
type MsgKey struct {
	User string
	Seq  uint64
}

func (k MsgKey) String() string { return k.User + "#" + strconv.FormatUint(k.Seq, 10) }

// Ledger is what a case published, acknowledged by nsqd, and what it expects of each message.
// Accounting compares it with what was observed downstream; nothing in it comes from the bridge.
type Ledger struct {
	mu       sync.Mutex
	good     map[MsgKey]bool          // location messages that must reach the stream
	expectDL map[MsgKey]bridge.Reason // location messages that must be dead-lettered instead
	bad      map[string]*BadMessage   // bad input by exact body
	badSHA   map[string]*BadMessage   // and by the hex SHA-256 of its body
	badOrder []*BadMessage            // in publish order
}

// BadMessage is one bad-input message and the dead-letter reason it must get.
type BadMessage struct {
	Class  string
	Reason bridge.Reason
	Body   []byte
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{good: map[MsgKey]bool{}, expectDL: map[MsgKey]bridge.Reason{}, bad: map[string]*BadMessage{}, badSHA: map[string]*BadMessage{}}
}

// Good records location messages acknowledged by nsqd.
func (l *Ledger) Good(bodies ...[]byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range bodies {
		m, err := location.Parse(b)
		if err != nil {
			panic("chaos: Ledger.Good: not a location message: " + err.Error())
		}
		k := MsgKey{m.UserID, m.Seq}
		l.good[k] = true
	}
}

// ExpectDeadLetter records location messages that must be dead-lettered with reason (and never
// reach the stream).
func (l *Ledger) ExpectDeadLetter(reason bridge.Reason, bodies ...[]byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range bodies {
		m, err := location.Parse(b)
		if err != nil {
			panic("chaos: Ledger.ExpectDeadLetter: not a location message: " + err.Error())
		}
		l.expectDL[MsgKey{m.UserID, m.Seq}] = reason
	}
}

// Bad records a bad-input message of a class that must be dead-lettered with reason.
func (l *Ledger) Bad(class string, reason bridge.Reason, body []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, dup := l.bad[string(body)]; dup {
		panic("chaos: Ledger.Bad: the same bad body twice (bodies identify messages): " + class)
	}
	b := &BadMessage{Class: class, Reason: reason, Body: bytes.Clone(body)}
	l.bad[string(body)] = b
	sum := sha256.Sum256(body)
	l.badSHA[hex.EncodeToString(sum[:])] = b
	l.badOrder = append(l.badOrder, b)
}

// Published returns the number of messages recorded (good, expected dead letters and bad).
func (l *Ledger) Published() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.good) + len(l.expectDL) + len(l.bad)
}

// GoodCount returns the number of good messages recorded.
func (l *Ledger) GoodCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.good)
}

// Observed is what a case saw downstream of the bridge.
type Observed struct {
	// Stream holds the user records in the order consumers read them: shard by shard (parents
	// before children) or the order a recording ESM handler was called in.
	Stream []UserRec
	// DeadLetters are the envelopes read from the dead-letter topic, one per dead-letter message
	// (redeliveries of the same dead-letter message removed).
	DeadLetters []DeadLetter
	// BackInNSQ are message bodies still queued in the bridge's channel after the bridge exited.
	BackInNSQ [][]byte
	// HaveBackInNSQ says the channel was drained and BackInNSQ is meaningful.
	HaveBackInNSQ bool
}

// DeadLetter is a dead-letter envelope. An envelope whose body had to be truncated to fit nsqd's
// message size limit is recognised by body_truncated and body_sha256 (the names the fault suite
// proposes; a bridge without them never truncates).
type DeadLetter struct {
	bridge.Envelope
	BodyTruncated bool   `json:"body_truncated,omitempty"`
	BodySHA256    string `json:"body_sha256,omitempty"`
}

// UserRec is one user record read from the stream.
type UserRec struct {
	Shard  string
	SeqNum string // Kinesis sequence number of the carrying record
	Sub    int
	Data   []byte
	// RecDigest is the SHA-256 of the carrying Kinesis record's data: two records with the same
	// digest are the same aggregate written twice.
	RecDigest [32]byte
	// Copy is the index of the carrying record among the records of the same digest (0 = the
	// first one read).
	Copy int
	// Arrival is the carrying record's ApproximateArrivalTimestamp (zero when unknown).
	Arrival time.Time
}

// Accounting is the exact tally of a case.
type Accounting struct {
	Published    int `json:"published"`     // every message acknowledged by nsqd
	PublishedBad int `json:"published_bad"` // of which bad input
	Good         int `json:"good"`          // of which location messages meant for the stream
	Delivered    int `json:"delivered"`     // distinct good messages in the stream
	// Duplicated counts extra copies of good messages in the stream; DupSameRecord those carried
	// by a second copy of an identical Kinesis record (a retried PutRecords entry), DupOther the
	// rest (re-aggregated after an NSQ redelivery).
	Duplicated    int            `json:"duplicated"`
	DupSameRecord int            `json:"duplicated_same_record"`
	DupOther      int            `json:"duplicated_other"`
	Lost          int            `json:"lost"`
	Reordered     int            `json:"reordered"`
	DeadLettered  map[string]int `json:"dead_lettered"` // distinct messages by reason
	DLCopies      int            `json:"dead_letter_copies"`
	DLTruncated   int            `json:"dead_letters_truncated"` // recognised by body_sha256
	// GoodDeadLettered counts good messages dead-lettered, by reason; GoodDLAlsoInStream those of
	// them that are in the stream as well (a redelivery of a message already written).
	GoodDeadLettered   map[string]int `json:"good_dead_lettered,omitempty"`
	GoodDLAlsoInStream int            `json:"good_dead_lettered_also_in_stream"`
	GoodDLOnly         int            `json:"good_dead_lettered_only"`
	// Bad input: how many of each class were dead-lettered with the expected reason.
	BadByClass       map[string]*ClassTally `json:"bad_by_class,omitempty"`
	BadInStream      int                    `json:"bad_in_stream"`
	BadWrongReason   int                    `json:"bad_wrong_reason"`
	BadNotDL         int                    `json:"bad_not_dead_lettered"`
	ExpectedDLMissed int                    `json:"expected_dead_letters_missed"`
	ExpectedDLInStr  int                    `json:"expected_dead_letters_in_stream"`
	BackInNSQ        int                    `json:"back_in_nsq"`
	BackAlsoInStream int                    `json:"back_in_nsq_also_in_stream"` // written, then requeued unFINished (at-least-once)
	Unknown          int                    `json:"unknown_records"`            // stream or dead-letter records matching nothing published
	Samples          map[string][]string    `json:"samples,omitempty"`
}

// ClassTally is the outcome of one bad-input class.
type ClassTally struct {
	Reason       bridge.Reason  `json:"reason"`
	Published    int            `json:"published"`
	DeadLettered int            `json:"dead_lettered"` // with the expected reason
	WrongReason  map[string]int `json:"wrong_reason,omitempty"`
	InStream     int            `json:"in_stream"`
}

const maxSamples = 8

func (a *Accounting) sample(kind, s string) {
	if a.Samples == nil {
		a.Samples = map[string][]string{}
	}
	if len(a.Samples[kind]) < maxSamples {
		a.Samples[kind] = append(a.Samples[kind], s)
	}
}

// EnvelopeBody returns the original body of a dead-letter envelope.
func EnvelopeBody(e bridge.Envelope) []byte {
	if e.Body != nil {
		return []byte(*e.Body)
	}
	return e.BodyBase64
}

// Account tallies the observations against the ledger.
func (l *Ledger) Account(o Observed) Accounting {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := Accounting{DeadLettered: map[string]int{}, GoodDeadLettered: map[string]int{}, BadByClass: map[string]*ClassTally{}}
	a.Good = len(l.good)
	a.PublishedBad = len(l.bad)
	a.Published = len(l.good) + len(l.expectDL) + len(l.bad)
	for _, b := range l.badOrder {
		ct := a.BadByClass[b.Class]
		if ct == nil {
			ct = &ClassTally{Reason: b.Reason}
			a.BadByClass[b.Class] = ct
		}
		ct.Published++
	}

	// The stream, in consumer order.
	inStream := map[MsgKey]int{}
	type userState struct {
		max  uint64
		seen map[uint64]bool
	}
	users := map[string]*userState{}
	for _, r := range o.Stream {
		if b, ok := l.bad[string(r.Data)]; ok {
			a.BadInStream++
			a.BadByClass[b.Class].InStream++
			a.sample("bad_in_stream", b.Class+" on "+r.Shard)
			continue
		}
		m, err := location.Parse(r.Data)
		if err != nil {
			a.Unknown++
			a.sample("unknown", fmt.Sprintf("%s/%s/%d: %.60q", r.Shard, r.SeqNum, r.Sub, r.Data))
			continue
		}
		k := MsgKey{m.UserID, m.Seq}
		if _, ok := l.expectDL[k]; ok {
			a.ExpectedDLInStr++
			a.sample("expected_dead_letter_in_stream", k.String())
			continue
		}
		if !l.good[k] {
			a.Unknown++
			a.sample("unknown", k.String()+" (not published)")
			continue
		}
		inStream[k]++
		u := users[k.User]
		if u == nil {
			u = &userState{seen: map[uint64]bool{}}
			users[k.User] = u
		}
		switch {
		case u.seen[k.Seq]:
			a.Duplicated++
			if r.Copy > 0 {
				a.DupSameRecord++
			} else {
				a.DupOther++
				a.sample("duplicate_other", k.String()+" on "+r.Shard)
			}
		case k.Seq < u.max:
			a.Reordered++
			a.sample("reordered", fmt.Sprintf("%s after #%d (shard %s)", k, u.max, r.Shard))
		}
		u.seen[k.Seq] = true
		u.max = max(u.max, k.Seq)
	}
	a.Delivered = len(inStream)

	// Dead letters.
	dlGood := map[MsgKey][]bridge.Reason{}
	badDL := map[string]int{}
	for _, e := range o.DeadLetters {
		body := EnvelopeBody(e.Envelope)
		reason := string(e.Reason)
		b, ok := l.bad[string(body)]
		if !ok && e.BodyTruncated {
			if b, ok = l.badSHA[e.BodySHA256]; ok {
				a.DLTruncated++
				body = b.Body
			}
		}
		if ok {
			ct := a.BadByClass[b.Class]
			badDL[string(body)]++
			if badDL[string(body)] > 1 {
				a.DLCopies++
				continue
			}
			a.DeadLettered[reason]++
			if e.Reason == b.Reason {
				ct.DeadLettered++
			} else {
				a.BadWrongReason++
				if ct.WrongReason == nil {
					ct.WrongReason = map[string]int{}
				}
				ct.WrongReason[reason]++
				a.sample("bad_wrong_reason", b.Class+": got "+reason+", want "+string(b.Reason))
			}
			continue
		}
		m, err := location.Parse(body)
		if err != nil {
			a.Unknown++
			a.sample("unknown_dead_letter", fmt.Sprintf("%s: %.60q", reason, body))
			continue
		}
		k := MsgKey{m.UserID, m.Seq}
		if !l.good[k] {
			if _, ok := l.expectDL[k]; !ok {
				a.Unknown++
				a.sample("unknown_dead_letter", k.String()+" (not published)")
				continue
			}
		}
		if len(dlGood[k]) > 0 {
			a.DLCopies++
		} else {
			a.DeadLettered[reason]++
		}
		dlGood[k] = append(dlGood[k], e.Reason)
	}
	for k, reasons := range dlGood {
		if want, ok := l.expectDL[k]; ok {
			if reasons[0] != want {
				a.ExpectedDLMissed++
				a.sample("expected_dead_letter_wrong_reason", k.String()+": "+string(reasons[0]))
			}
			continue
		}
		a.GoodDeadLettered[string(reasons[0])]++
		if inStream[k] > 0 {
			a.GoodDLAlsoInStream++
		} else {
			a.GoodDLOnly++
		}
	}
	for k := range l.expectDL {
		if len(dlGood[k]) == 0 {
			a.ExpectedDLMissed++
			a.sample("expected_dead_letter_missing", k.String())
		}
	}
	for _, b := range l.badOrder {
		if badDL[string(b.Body)] == 0 {
			a.BadNotDL++
			a.sample("bad_not_dead_lettered", b.Class)
		}
	}

	// Back in NSQ (after a fatal exit).
	back := map[MsgKey]bool{}
	backBad := map[string]bool{}
	for _, body := range o.BackInNSQ {
		if _, ok := l.bad[string(body)]; ok {
			backBad[string(body)] = true
			continue
		}
		if m, err := location.Parse(body); err == nil {
			back[MsgKey{m.UserID, m.Seq}] = true
		}
	}
	a.BackInNSQ = len(back) + len(backBad)
	for k := range back {
		if inStream[k] > 0 {
			a.BackAlsoInStream++
		}
	}

	// Lost: published, and neither in the stream, nor dead-lettered, nor back in NSQ.
	var lost []MsgKey
	for k := range l.good {
		if inStream[k] == 0 && len(dlGood[k]) == 0 && !back[k] {
			lost = append(lost, k)
		}
	}
	for k := range l.expectDL {
		if len(dlGood[k]) == 0 && !back[k] {
			lost = append(lost, k)
		}
	}
	sort.Slice(lost, func(i, j int) bool {
		if lost[i].User != lost[j].User {
			return lost[i].User < lost[j].User
		}
		return lost[i].Seq < lost[j].Seq
	})
	for _, k := range lost {
		a.sample("lost", k.String())
	}
	a.Lost = len(lost)
	for _, b := range l.badOrder {
		if badDL[string(b.Body)] == 0 && !backBad[string(b.Body)] {
			a.Lost++
		}
	}
	if len(a.BadByClass) == 0 {
		a.BadByClass = nil
	}
	if len(a.GoodDeadLettered) == 0 {
		a.GoodDeadLettered = nil
	}
	return a
}

// DeadLetterTotal is the number of distinct messages dead-lettered.
func (a *Accounting) DeadLetterTotal() int {
	n := 0
	for _, v := range a.DeadLettered {
		n += v
	}
	return n
}

// digest is the SHA-256 of a Kinesis record's data.
func digest(b []byte) [32]byte { return sha256.Sum256(b) }
