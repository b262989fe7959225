package logread

import (
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// Position is where reading starts in the shards that exist when reading starts.
type Position struct {
	Type types.ShardIteratorType // TRIM_HORIZON, LATEST or AT_TIMESTAMP
	At   time.Time               // for AT_TIMESTAMP
}

var (
	TrimHorizon = Position{Type: types.ShardIteratorTypeTrimHorizon}
	Latest      = Position{Type: types.ShardIteratorTypeLatest}
)

// AtTime is the position of the first record that arrived at or after t.
func AtTime(t time.Time) Position { return Position{Type: types.ShardIteratorTypeAtTimestamp, At: t} }

func (p Position) String() string {
	if p.Type == types.ShardIteratorTypeAtTimestamp {
		return p.At.UTC().Format(time.RFC3339Nano)
	}
	return strings.ReplaceAll(strings.ToLower(string(p.Type)), "_", "-")
}

// ParsePosition reads "trim-horizon", "latest", an RFC 3339 time or a duration ago ("15m", "2h30m").
func ParsePosition(s string, now time.Time) (Position, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "trim-horizon", "trim_horizon":
		return TrimHorizon, nil
	case "latest":
		return Latest, nil
	}
	t, err := ParseTime(s, now)
	if err != nil {
		return Position{}, fmt.Errorf("%w (or trim-horizon, latest)", err)
	}
	return AtTime(t), nil
}

// ParseTime reads an RFC 3339 time ("2026-12-06T07:00:00Z") or a duration ago ("15m").
func ParseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("invalid time %q: a duration ago must not be negative", s)
		}
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("invalid time %q: want an RFC 3339 time such as 2026-01-02T15:04:05Z or a duration ago such as 15m", s)
}
