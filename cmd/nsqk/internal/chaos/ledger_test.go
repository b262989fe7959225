package chaos

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/nsqk/nsqk/shared/bridge"
)

func loc(user string, seq int) []byte {
	return fmt.Appendf(nil, `{"user_id":%q,"seq":%d,"ts":1}`, user, seq)
}

func rec(user string, seq int, copy int) UserRec {
	return UserRec{Shard: "s0", Data: loc(user, seq), Copy: copy}
}

func env(reason bridge.Reason, body []byte) DeadLetter {
	s := string(body)
	return DeadLetter{Envelope: bridge.Envelope{Reason: reason, Body: &s}}
}

// The accounting must tell loss, duplicates (whole re-sent records or re-aggregated), reorders,
// dead letters and bad input apart: each assertion of the suite rests on it.
func TestAccountingClassifies(t *testing.T) {
	l := NewLedger()
	for s := 1; s <= 5; s++ {
		l.Good(loc("a", s), loc("b", s))
	}
	l.ExpectDeadLetter(bridge.ReasonMaxAttempts, loc("x", 1))
	l.Bad("empty key", bridge.ReasonEmptyKey, []byte(`{"user_id":""}`))
	l.Bad("invalid", bridge.ReasonInvalidJSON, []byte(`{`))
	l.Bad("in stream", bridge.ReasonMissingKey, []byte(`{"seq":1}`))

	obs := Observed{
		Stream: []UserRec{
			rec("a", 1, 0), rec("a", 2, 0), rec("a", 2, 1), // a#2 twice: the second copy of an identical record
			rec("a", 4, 0), rec("a", 3, 0), // a#3 after a#4: a reorder
			rec("a", 4, 0),                                 // a#4 again in another record: a re-aggregated duplicate, not a reorder
			rec("b", 1, 0), rec("b", 2, 0), rec("b", 3, 0), // b#4 dead-lettered, b#5 lost
			{Shard: "s0", Data: []byte(`{"seq":1}`)}, // bad input in the stream
			rec("z", 9, 0),                           // never published
		},
		DeadLetters: []DeadLetter{
			env(bridge.ReasonLate, loc("b", 4)),
			env(bridge.ReasonLate, loc("a", 1)), // also in the stream
			env(bridge.ReasonMaxAttempts, loc("x", 1)),
			env(bridge.ReasonEmptyKey, []byte(`{"user_id":""}`)),
			env(bridge.ReasonEmptyKey, []byte(`{"user_id":""}`)), // a second copy
			env(bridge.ReasonMissingKey, []byte(`{`)),            // wrong reason
		},
	}
	a := l.Account(obs)
	want := map[string][2]int{
		"published":     {a.Published, 14},
		"good":          {a.Good, 10},
		"delivered":     {a.Delivered, 7}, // a1-a4, b1-b3
		"duplicated":    {a.Duplicated, 2},
		"dupSame":       {a.DupSameRecord, 1},
		"dupOther":      {a.DupOther, 1},
		"reordered":     {a.Reordered, 1},
		"lost":          {a.Lost, 3}, // a#5, b#5, and the bad message that went to the stream instead of the dead-letter topic
		"badInStream":   {a.BadInStream, 1},
		"badWrong":      {a.BadWrongReason, 1},
		"badNotDL":      {a.BadNotDL, 1},
		"goodDLOnly":    {a.GoodDLOnly, 1},
		"goodDLAlso":    {a.GoodDLAlsoInStream, 1},
		"dlCopies":      {a.DLCopies, 1},
		"unknown":       {a.Unknown, 1},
		"late":          {a.GoodDeadLettered[string(bridge.ReasonLate)], 2},
		"expectMissed":  {a.ExpectedDLMissed, 0},
		"dlMaxAttempts": {a.DeadLettered[string(bridge.ReasonMaxAttempts)], 1},
	}
	for name, v := range want {
		if v[0] != v[1] {
			t.Errorf("%s = %d, want %d", name, v[0], v[1])
		}
	}
	if got := a.Samples["lost"]; len(got) != 2 || got[0] != "a#5" || got[1] != "b#5" {
		t.Errorf("lost samples %v", got)
	}
}

// Messages back in NSQ after a fatal exit are not lost; an expected dead letter that reached the
// stream is reported.
func TestAccountingBackInNSQAndExpectedDeadLetters(t *testing.T) {
	l := NewLedger()
	l.Good(loc("a", 1), loc("a", 2))
	l.ExpectDeadLetter(bridge.ReasonMaxAttempts, loc("x", 1), loc("x", 2))
	a := l.Account(Observed{
		Stream:      []UserRec{rec("a", 1, 0), rec("x", 2, 0)},
		DeadLetters: []DeadLetter{env(bridge.ReasonLate, loc("x", 1))},
		BackInNSQ:   [][]byte{loc("a", 2)}, HaveBackInNSQ: true,
	})
	if a.Lost != 1 || a.BackInNSQ != 1 || a.ExpectedDLInStr != 1 || a.ExpectedDLMissed != 2 {
		t.Fatalf("%+v", a)
	}
}

func TestSelect(t *testing.T) {
	all := []Case{{Name: "kinesis-a", Quick: true}, {Name: "kinesis-b"}, {Name: "other"}}
	got, err := Select(all, true, nil)
	if err != nil || len(got) != 1 || got[0].Name != "kinesis-a" {
		t.Fatalf("quick: %v %v", got, err)
	}
	got, err = Select(all, false, []string{"kinesis-*", "kinesis-a"})
	if err != nil || len(got) != 2 {
		t.Fatalf("prefix: %v %v", got, err)
	}
	if _, err := Select(all, false, []string{"nope"}); err == nil {
		t.Fatal("unknown case accepted")
	}
	names := map[string]bool{}
	for _, c := range Cases() {
		if names[c.Name] || c.Rule == "" || c.Run == nil || c.Group == "" {
			t.Errorf("case %q: duplicate name or missing rule/run/group", c.Name)
		}
		names[c.Name] = true
	}
}

func TestMidpoint(t *testing.T) {
	var lo, hi [16]byte
	for i := range hi {
		hi[i] = 0xff
	}
	m := midpoint(lo, hi)
	if m.String() != "170141183460469231731687303715884105727" {
		t.Fatalf("midpoint %s", m)
	}
}

// An envelope whose body was truncated to fit nsqd's message size limit is matched by the SHA-256
// of the original body.
func TestAccountingTruncatedDeadLetter(t *testing.T) {
	l := NewLedger()
	big := []byte(`{"user_id":"u1","pad":"` + string(make([]byte, 100)) + `"}`)
	l.Bad("big", bridge.ReasonTooLarge, big)
	sum := sha256.Sum256(big)
	d := env(bridge.ReasonTooLarge, big[:20])
	d.BodyTruncated, d.BodySHA256 = true, hex.EncodeToString(sum[:])
	a := l.Account(Observed{DeadLetters: []DeadLetter{d}})
	if a.BadNotDL != 0 || a.DLTruncated != 1 || a.Unknown != 0 || a.Lost != 0 {
		t.Fatalf("%+v", a)
	}
	d.BodySHA256 = "00"
	if a := l.Account(Observed{DeadLetters: []DeadLetter{d}}); a.BadNotDL != 1 || a.Unknown != 1 {
		t.Fatalf("a wrong digest matched: %+v", a)
	}
}
