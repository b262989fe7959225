package location

import (
	"testing"
	"time"
)

func TestGeneratorMessagesParseAndKeepPerUserSeq(t *testing.T) {
	g := NewGenerator(50, 1)
	g.Now = func() time.Time { return time.UnixMilli(1764100000000) }
	last := map[string]uint64{}
	total := 0
	for i := 0; i < 2000; i++ {
		body, user, seq := g.Next(nil)
		total += len(body)
		m, err := Parse(body)
		if err != nil {
			t.Fatalf("message %d: %v: %s", i, err, body)
		}
		if m.UserID != user || m.Seq != seq || m.TS != 1764100000000 {
			t.Fatalf("message %d: parsed %+v, generator said %s/%d", i, m, user, seq)
		}
		if len(m.UserID) != 10 {
			t.Fatalf("user id %q is not 10 characters", m.UserID)
		}
		if seq != last[user]+1 {
			t.Fatalf("user %s: seq %d after %d", user, seq, last[user])
		}
		last[user] = seq
	}
	if avg := total / 2000; avg < 230 || avg > 270 {
		t.Fatalf("average message size %d bytes, want about 250", avg)
	}
}

func TestGeneratorIsReproducible(t *testing.T) {
	a, b := NewGenerator(10, 7), NewGenerator(10, 7)
	fixed := func() time.Time { return time.Unix(0, 0) }
	a.Now, b.Now = fixed, fixed
	for i := 0; i < 100; i++ {
		x, _, _ := a.Next(nil)
		y, _, _ := b.Next(nil)
		if string(x) != string(y) {
			t.Fatalf("message %d differs:\n%s\n%s", i, x, y)
		}
	}
}
