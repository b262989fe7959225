package nullsink

import (
	"bytes"
	"fmt"
	"math/bits"
	"sync"
	"time"

	"github.com/nsqk/nsqk/shared/location"
	"github.com/nsqk/nsqk/shared/shardmap"
)

// Verifier checks that every location message (shared/location) published arrives exactly once,
// and in order per user, as user records in the stream. Feed it user records in stream order per
// shard (Observe); the sink does this for every accepted entry, and the benchmark does it again
// for records read back from an emulator. It is safe for concurrent use; order is judged in the
// order Observe calls happen.
type Verifier struct {
	mu       sync.Mutex
	expect   []uint64 // expect[i]: messages of user i (ids location.UserID(i)) published = last seq
	hasExp   bool
	users    []userTrack           // by user number, for ids of the form location.UserID
	others   map[string]*userTrack // any other id
	shardOf  func(key []byte) int  // nil = no shard check
	latFrom  int64                 // record latency of messages with ts >= latFrom (Unix ms); 0 = off
	latNow   func() time.Time
	lat      []float64 // milliseconds, arrival - ts
	s        Verification
	examples int
}

type userTrack struct {
	seen  []uint64 // bit seq is set once seq arrived
	last  uint64   // highest seq seen
	shard int32    // shard owning the user's hash + 1 (0 = not computed yet)
}

// Verification is a Verifier's result.
type Verification struct {
	// Expected is the number of messages published (0 when no expectation was given).
	Expected int64 `json:"expected"`
	// Received counts user records observed; Unique the distinct (user, seq) among them.
	Received int64 `json:"received"`
	Unique   int64 `json:"unique"`
	// Duplicates: (user, seq) seen again. Missing: expected and never seen.
	Duplicates int64 `json:"duplicates"`
	Missing    int64 `json:"missing"`
	// OutOfOrder: a user's record arriving after a higher seq of the same user (stream order).
	OutOfOrder int64 `json:"out_of_order"`
	// Unexpected: a (user, seq) that was not published (unknown user, seq 0 or beyond the last).
	Unexpected int64 `json:"unexpected"`
	// Unparsed: data that is not a location message.
	Unparsed int64 `json:"unparsed"`
	// KeyMismatch: a user record whose partition key is not its user_id.
	KeyMismatch int64 `json:"key_mismatch"`
	// WrongShard: a user record stored on a shard that does not own the hash of its user_id (the
	// partition key the bridge routes by), which would break per-user order for consumers.
	WrongShard int64 `json:"wrong_shard"`
	// DataBytes is the sum of user record data sizes.
	DataBytes int64 `json:"data_bytes"`
	// OK: everything expected arrived exactly once, in order, well-formed, on its shard.
	OK bool `json:"ok"`
	// Problems lists the first few faults found, for humans.
	Problems []string `json:"problems,omitempty"`
}

// Summary is a one-line account.
func (v Verification) Summary() string {
	return fmt.Sprintf("%d/%d once, %d duplicate, %d missing, %d out of order, %d unexpected, %d unparsed, %d key mismatch, %d wrong shard",
		v.Unique, v.Expected, v.Duplicates, v.Missing, v.OutOfOrder, v.Unexpected, v.Unparsed, v.KeyMismatch, v.WrongShard)
}

// NewVerifier returns a verifier. expect[i] is the number of messages published for user i
// (location.UserID(i)), i.e. its last seq; nil means no expectation (only duplicates and order
// are judged). The verifier keeps a copy; Expect extends it while messages are published.
func NewVerifier(expect []uint64) *Verifier {
	v := &Verifier{others: map[string]*userTrack{}, latNow: time.Now}
	if expect != nil {
		v.expect, v.hasExp = append([]uint64(nil), expect...), true
		v.users = make([]userTrack, len(expect))
	}
	return v
}

// Expect records that user i's messages up to seq were published (call it before they can arrive).
func (v *Verifier) Expect(user int, seq uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if user >= len(v.expect) {
		v.expect = append(v.expect, make([]uint64, user+1-len(v.expect))...)
		v.users = append(v.users, make([]userTrack, user+1-len(v.users))...)
	}
	v.expect[user] = max(v.expect[user], seq)
	v.hasExp = true
}

// CheckShards makes the verifier check that each user record's user_id hashes into the shard it
// was stored on (index into m.Shards()).
func (v *Verifier) CheckShards(m *shardmap.Map) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.shardOf = func(key []byte) int { return m.Lookup(shardmap.Hash(md5Sum(key))) }
}

// RecordLatency makes the verifier keep, for every message with ts >= from, the time from its ts
// (the publish time written by the generator, millisecond resolution) to its arrival.
func (v *Verifier) RecordLatency(from time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.latFrom = from.UnixMilli()
}

// Latencies returns the recorded latencies in milliseconds (a copy, arrival order).
func (v *Verifier) Latencies() []float64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]float64(nil), v.lat...)
}

// Observe accounts for one user record stored on shard (index into the stream's shards, or -1
// when unknown). key is the record's partition key, checked to be the user_id; pass nil when
// the key is not meant to be the user's (a record routed by an explicit hash key, such as the
// bridge's --record-keys=lane records, which share their aggregate's keys).
func (v *Verifier) Observe(shard int, key, data []byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.observe(shard, key, data)
}

// observeAll is Observe for the user records of one Kinesis record, under one lock.
func (v *Verifier) observeAll(shard int, keys, datas [][]byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for i := range datas {
		v.observe(shard, keys[i], datas[i])
	}
}

// maxProblems is how many problems are described; call sites check it first, so that a run
// full of faults does not format (or even box the arguments of) every one.
const maxProblems = 10

func (v *Verifier) problem(format string, a ...any) {
	if v.examples < maxProblems {
		v.s.Problems = append(v.s.Problems, fmt.Sprintf(format, a...))
	}
	v.examples++
}

func (v *Verifier) observe(shard int, key, data []byte) {
	v.s.Received++
	v.s.DataBytes += int64(len(data))
	user, seq, ts, ok := parseLocation(data)
	if !ok {
		v.s.Unparsed++
		if v.examples < maxProblems {
			v.problem("unparsed record on shard %d: %.60q", shard, data)
		} else {
			v.examples++
		}
		return
	}
	if key != nil && !bytes.Equal(key, user) {
		v.s.KeyMismatch++
		if v.examples < maxProblems {
			v.problem("record of user %s seq %d has partition key %q", user, seq, key)
		} else {
			v.examples++
		}
	}
	if v.latFrom != 0 && ts >= v.latFrom {
		v.lat = append(v.lat, float64(v.latNow().UnixMicro())/1000-float64(ts))
	}
	var t *userTrack
	n, numbered := userNumber(user)
	switch {
	case numbered && v.hasExp && n < len(v.users):
		t = &v.users[n]
	case numbered && !v.hasExp && n < 1<<24:
		if n >= len(v.users) {
			v.users = append(v.users, make([]userTrack, n+1-len(v.users))...)
		}
		t = &v.users[n]
	default:
		t = v.others[string(user)]
		if t == nil {
			t = &userTrack{}
			v.others[string(user)] = t
		}
	}
	if v.shardOf != nil && shard >= 0 {
		if t.shard == 0 { // one MD5 per user, not per record
			t.shard = int32(v.shardOf(user)) + 1
		}
		if got := int(t.shard) - 1; got != shard {
			v.s.WrongShard++
			if v.examples < maxProblems {
				v.problem("record of user %s stored on shard %d, the hash of the user id belongs to shard %d", user, shard, got)
			}
		}
	}
	if v.hasExp && (!numbered || n >= len(v.expect) || seq == 0 || seq > v.expect[n]) {
		v.s.Unexpected++
		if v.examples < maxProblems {
			v.problem("unexpected record: user %s seq %d (not published)", user, seq)
		} else {
			v.examples++
		}
	}
	w := int(seq / 64)
	if w >= len(t.seen) {
		if w > 1<<20 { // a seq this large is garbage; do not allocate for it
			v.s.Unexpected++
			return
		}
		t.seen = append(t.seen, make([]uint64, w+1-len(t.seen))...)
	}
	bit := uint64(1) << (seq % 64)
	if t.seen[w]&bit != 0 {
		v.s.Duplicates++
		if v.examples < maxProblems {
			v.problem("duplicate: user %s seq %d", user, seq)
		} else {
			v.examples++
		}
		return
	}
	t.seen[w] |= bit
	v.s.Unique++
	if seq < t.last {
		v.s.OutOfOrder++
		if v.examples < maxProblems {
			v.problem("out of order on shard %d: user %s seq %d after seq %d", shard, user, seq, t.last)
		} else {
			v.examples++
		}
	}
	t.last = max(t.last, seq)
}

// Result computes the verification (Missing needs the expectation).
func (v *Verifier) Result() Verification {
	v.mu.Lock()
	defer v.mu.Unlock()
	r := v.s
	r.Problems = append([]string(nil), v.s.Problems...)
	if v.hasExp {
		for i, last := range v.expect {
			r.Expected += int64(last)
			if last == 0 {
				continue
			}
			t := &v.users[i]
			got := 0
			for w, word := range t.seen {
				if lo := uint64(w) * 64; lo > last {
					break
				} else if lo+63 > last { // keep bits 0..last-lo
					word &= (^uint64(0)) >> (63 - (last - lo))
				}
				if w == 0 {
					word &^= 1 // seq 0 is never published
				}
				got += bits.OnesCount64(word)
			}
			if miss := int64(last) - int64(got); miss > 0 {
				if r.Missing == 0 && len(r.Problems) < 10 {
					r.Problems = append(r.Problems, fmt.Sprintf("missing: %d of user %s's %d messages (first user with a gap)", miss, location.UserID(i), last))
				}
				r.Missing += miss
			}
		}
	}
	r.OK = r.Duplicates == 0 && r.Missing == 0 && r.OutOfOrder == 0 && r.Unexpected == 0 &&
		r.Unparsed == 0 && r.KeyMismatch == 0 && r.WrongShard == 0 && (!v.hasExp || r.Unique == r.Expected)
	return r
}

// userNumber returns i for an id of the form location.UserID(i) ("u" + 9 digits).
func userNumber(id []byte) (int, bool) {
	if len(id) != 10 || id[0] != 'u' {
		return 0, false
	}
	n := 0
	for _, c := range id[1:] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// parseLocation extracts user_id, seq and ts from a location message. The generator writes them
// first, in this order, so the fast path reads a fixed prefix; anything else goes through
// encoding/json.
func parseLocation(b []byte) (user []byte, seq uint64, ts int64, ok bool) {
	const p1, p2, p3 = `{"user_id":"`, `","seq":`, `,"ts":`
	if rest, found := bytes.CutPrefix(b, []byte(p1)); found {
		if i := bytes.IndexByte(rest, '"'); i > 0 && bytes.IndexByte(rest[:i], '\\') < 0 {
			user, rest = rest[:i], rest[i:]
			if rest, found = bytes.CutPrefix(rest, []byte(p2)); found {
				var n int
				if seq, n = digits(rest); n > 0 {
					if rest, found = bytes.CutPrefix(rest[n:], []byte(p3)); found {
						var t uint64
						if t, n = digits(rest); n > 0 && n < 19 && n < len(rest) && (rest[n] == ',' || rest[n] == '}') {
							return user, seq, int64(t), true
						}
					}
				}
			}
		}
	}
	m, err := location.Parse(b)
	if err != nil {
		return nil, 0, 0, false
	}
	return []byte(m.UserID), m.Seq, m.TS, true
}

// digits parses a decimal prefix (at most 19 digits).
func digits(b []byte) (uint64, int) {
	var v uint64
	i := 0
	for i < len(b) && i < 19 && '0' <= b[i] && b[i] <= '9' {
		v = v*10 + uint64(b[i]-'0')
		i++
	}
	if i > 1 && b[0] == '0' || i < len(b) && '0' <= b[i] && b[i] <= '9' {
		return 0, 0 // leading zero or too long: let encoding/json judge
	}
	return v, i
}
