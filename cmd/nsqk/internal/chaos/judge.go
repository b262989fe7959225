package chaos

import (
	"fmt"
	"sort"
	"strings"

	"github.com/nsqk/nsqk/shared/bridge"
)

// Expect is the delivery rule a case is judged by.
type Expect struct {
	// MaxDup bounds the duplicated count: 0 = none allowed, n > 0 = the at-least-once allowance
	// (DupWhy says where it comes from), -1 = counted but not bounded by a number (then
	// SameRecordDupsOnly says what they must be).
	MaxDup int
	DupWhy string
	// SameRecordDupsOnly: every duplicate must be a second copy of an identical Kinesis record
	// (a PutRecords entry retried after its answer was lost), never a re-aggregated message.
	SameRecordDupsOnly bool
	// MaxReorder bounds reorders (0 in strict mode); ReorderWhy says why any are allowed.
	MaxReorder int
	ReorderWhy string
	// GoodDL lists the reasons a good message may be dead-lettered with (none by default).
	GoodDL []bridge.Reason
	// BackInNSQ allows messages to be left in NSQ (after a fatal exit).
	BackInNSQ bool
}

// Judge records the delivery checks of a case from its accounting.
func (t *T) Judge(a Accounting, e Expect) {
	t.Check("lost = 0", a.Lost == 0, "%d lost%s", a.Lost, samples(a, "lost", "bad_not_dead_lettered"))
	if e.MaxReorder == 0 {
		t.Check("reordered = 0", a.Reordered == 0, "%d reordered%s", a.Reordered, samples(a, "reordered"))
	} else {
		t.Check(fmt.Sprintf("reordered <= %d (%s)", e.MaxReorder, e.ReorderWhy), a.Reordered <= e.MaxReorder,
			"%d reordered%s", a.Reordered, samples(a, "reordered"))
	}
	switch {
	case e.MaxDup < 0:
		t.Note("duplicated %d (%d as a re-sent identical record, %d re-aggregated): %s", a.Duplicated, a.DupSameRecord, a.DupOther, e.DupWhy)
	case e.MaxDup == 0:
		t.Check("duplicated = 0", a.Duplicated == 0, "%d duplicated (%d as a re-sent identical record, %d re-aggregated)%s",
			a.Duplicated, a.DupSameRecord, a.DupOther, samples(a, "duplicate_other"))
	default:
		t.Check(fmt.Sprintf("duplicated <= %d (%s)", e.MaxDup, e.DupWhy), a.Duplicated <= e.MaxDup,
			"%d duplicated (%d as a re-sent identical record, %d re-aggregated)", a.Duplicated, a.DupSameRecord, a.DupOther)
	}
	if e.SameRecordDupsOnly {
		t.Check("duplicates are whole re-sent records", a.DupOther == 0,
			"%d of %d duplicates were re-aggregated rather than a retried entry%s", a.DupOther, a.Duplicated, samples(a, "duplicate_other"))
	}
	allowed := map[string]bool{}
	var names []string
	for _, r := range e.GoodDL {
		allowed[string(r)] = true
		names = append(names, string(r))
	}
	var wrong []string
	for reason, n := range a.GoodDeadLettered {
		if !allowed[reason] {
			wrong = append(wrong, fmt.Sprintf("%s=%d", reason, n))
		}
	}
	sort.Strings(wrong)
	if len(e.GoodDL) == 0 {
		t.Check("no good message dead-lettered", len(wrong) == 0, "%s", orNone(wrong))
	} else {
		t.Check("good messages dead-lettered only as "+strings.Join(names, ","), len(wrong) == 0,
			"other reasons: %s; by reason: %v (%d also in the stream, %d only dead-lettered)",
			orNone(wrong), a.GoodDeadLettered, a.GoodDLAlsoInStream, a.GoodDLOnly)
	}
	if a.PublishedBad > 0 {
		t.Check("bad input dead-lettered with its reason, never in the stream",
			a.BadInStream == 0 && a.BadWrongReason == 0 && a.BadNotDL == 0,
			"%d in the stream, %d with a wrong reason, %d not dead-lettered%s", a.BadInStream, a.BadWrongReason, a.BadNotDL,
			samples(a, "bad_in_stream", "bad_wrong_reason", "bad_not_dead_lettered"))
	}
	if a.ExpectedDLMissed > 0 || a.ExpectedDLInStr > 0 {
		t.Check("expected dead letters", false, "%d missing or with a wrong reason, %d in the stream%s",
			a.ExpectedDLMissed, a.ExpectedDLInStr, samples(a, "expected_dead_letter_missing", "expected_dead_letter_wrong_reason", "expected_dead_letter_in_stream"))
	}
	t.Check("nothing unknown downstream", a.Unknown == 0, "%d records match nothing published%s", a.Unknown,
		samples(a, "unknown", "unknown_dead_letter"))
	if !e.BackInNSQ {
		t.Check("nothing left in NSQ", a.BackInNSQ == 0, "%d", a.BackInNSQ)
	}
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func samples(a Accounting, kinds ...string) string {
	var parts []string
	for _, k := range kinds {
		if s := a.Samples[k]; len(s) > 0 {
			parts = append(parts, k+": "+strings.Join(s, "; "))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, " | ") + ")"
}
