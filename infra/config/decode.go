package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
)

// Context values arrive in two shapes: JSON types from cdk.json (float64, bool, []any,
// map[string]any) and strings from `cdk synth -c key=value` (also for lists and objects). decode
// turns either into a typed Go value with mapstructure; the hooks below give the conversions the
// context reference promises and the error messages a user can act on.

// decode converts one raw context value into *out. Object keys must match the json tags exactly
// (a misspelt or differently cased key is an error, not silently ignored).
func decode(raw, out any) error {
	d, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:           out,
		TagName:          "json",
		WeaklyTypedInput: true,
		ErrorUnused:      true,
		MatchName:        func(mapKey, fieldName string) bool { return mapKey == fieldName },
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			listHook, durationHook, timestampHook, wholeNumberHook, boolHook, scalarStringHook,
			jsonTextHook, // last: it may turn blank text into nil, which ends the chain
		),
	})
	if err != nil {
		return err
	}
	if err := d.Decode(raw); err != nil {
		return describe(err, reflect.TypeOf(out).Elem())
	}
	return nil
}

// describe flattens mapstructure's error tree into one message per problem, each prefixed with
// the field it concerns (none for a scalar).
func describe(err error, target reflect.Type) error {
	var msgs []string
	var walk func(error)
	walk = func(err error) {
		de, ok := err.(*mapstructure.DecodeError)
		if !ok {
			switch w := err.(type) {
			case interface{ Unwrap() []error }:
				for _, e := range w.Unwrap() {
					walk(e)
				}
			case interface{ Unwrap() error }:
				walk(w.Unwrap())
			default:
				msgs = append(msgs, err.Error())
			}
			return
		}
		inner := de.Unwrap()
		msg := inner.Error()
		var pe *mapstructure.ParseError
		var ue *mapstructure.UnconvertibleTypeError
		switch {
		case errors.As(inner, &pe):
			msg = want(pe.Expected.Type(), pe.Value)
		case errors.As(inner, &ue):
			msg = want(ue.Expected.Type(), ue.Value)
		}
		if keys, ok := strings.CutPrefix(msg, "has invalid keys: "); ok {
			msg = "unknown field " + quoted(strings.Split(keys, ", "))
		}
		// mapstructure names the target type when the problem is at the top level.
		if name := de.Name(); name != "" && name != target.String() {
			// "[NSQK_A]" (a map entry) reads as "NSQK_A".
			msg = strings.TrimPrefix(strings.NewReplacer("[", ".", "]", "").Replace(name), ".") + ": " + msg
		}
		msgs = append(msgs, msg)
	}
	walk(err)
	return errors.New(strings.Join(msgs, "; "))
}

// want is the message for a value that cannot become a t.
func want(t reflect.Type, v any) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int64:
		return fmt.Sprintf("want a whole number, got %s", show(v))
	case reflect.Float64:
		return fmt.Sprintf("want a number, got %s", show(v))
	case reflect.Bool:
		return fmt.Sprintf("want true or false, got %s", show(v))
	case reflect.String:
		return fmt.Sprintf("want a string, number or boolean, got %s", show(v))
	case reflect.Slice:
		return fmt.Sprintf("want a list of strings or a comma-separated string, got %s", show(v))
	case reflect.Map, reflect.Struct:
		return fmt.Sprintf("want a JSON object, got %s", show(v))
	}
	return fmt.Sprintf("want a %s, got %s", t, show(v))
}

func show(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%T (%v)", v, v)
}

var (
	durationType  = reflect.TypeOf(time.Duration(0))
	timestampType = reflect.TypeOf(time.Time{})
)

// jsonTextHook reads an object given as text (-c 'consumers={"monitor":{...}}').
func jsonTextHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || (to.Kind() != reflect.Map && to.Kind() != reflect.Struct) || to == timestampType {
		return data, nil
	}
	s := strings.TrimSpace(data.(string))
	if s == "" {
		return nil, nil
	}
	if !strings.HasPrefix(s, "{") {
		return nil, fmt.Errorf("want a JSON object, got %q", s)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("want a JSON object: %v", err)
	}
	return m, nil
}

// listHook accepts a JSON array (cdk.json), a comma-separated string (-c key=a,b) or a string
// holding a JSON array (-c 'key=["a","b"]') for a list of strings or of whole numbers; blanks are
// trimmed and empty entries dropped. The elements of a number list then go through
// wholeNumberHook.
func listHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeOf([]string(nil)) && to != reflect.TypeOf([]int(nil)) {
		return data, nil
	}
	var raw []any
	switch t := data.(type) {
	case string:
		s := strings.TrimSpace(t)
		if strings.HasPrefix(s, "[") {
			if err := json.Unmarshal([]byte(s), &raw); err != nil {
				return nil, fmt.Errorf("want a JSON array or a comma-separated list: %v", err)
			}
		} else {
			for _, e := range strings.Split(s, ",") {
				raw = append(raw, e)
			}
		}
	case []any:
		raw = t
	case []string:
		for _, e := range t {
			raw = append(raw, e)
		}
	default:
		return nil, fmt.Errorf("want a list or a comma-separated string, got %s", show(data))
	}
	var out []any
	for _, e := range raw {
		if s, ok := e.(string); ok {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			e = s
		} else if to.Elem().Kind() == reflect.String {
			return nil, fmt.Errorf("want a list of strings, found %T (%v)", e, e)
		}
		out = append(out, e)
	}
	if to.Elem().Kind() == reflect.String {
		strs := make([]string, len(out))
		for i, e := range out {
			strs[i] = e.(string)
		}
		return strs, nil
	}
	return out, nil
}

// durationHook takes Go duration strings only: a bare number would be ambiguous (seconds? ns?).
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != durationType {
		return data, nil
	}
	s, ok := data.(string)
	if !ok {
		return nil, fmt.Errorf("want a Go duration string such as \"30s\" or \"1h\", got %T (%v)", data, data)
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("want a Go duration string such as \"30s\" or \"1h\", got %q", s)
	}
	return d, nil
}

// timestampHook takes RFC 3339 or Unix seconds (a number or a string).
func timestampHook(from, to reflect.Type, data any) (any, error) {
	if to != timestampType {
		return data, nil
	}
	s := strings.TrimSpace(fmt.Sprint(data))
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f > 0 {
		sec := int64(f)
		return time.Unix(sec, int64((f-float64(sec))*1e9)).UTC(), nil
	}
	return nil, fmt.Errorf("%q is neither RFC 3339 (2025-01-31T00:00:00Z) nor Unix seconds", s)
}

// wholeNumberHook refuses what mapstructure would otherwise truncate or guess: 1.5, true, "0x10".
func wholeNumberHook(from, to reflect.Type, data any) (any, error) {
	if to.Kind() != reflect.Int || to == durationType {
		return data, nil
	}
	switch t := data.(type) {
	case float64:
		if t != float64(int(t)) {
			return nil, fmt.Errorf("want a whole number, got %v", t)
		}
		return int(t), nil
	case int:
		return t, nil
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(t))
		if err != nil {
			return nil, fmt.Errorf("want a whole number, got %q", t)
		}
		return n, nil
	case json.Number:
		return wholeNumberHook(from, to, string(t))
	}
	return nil, fmt.Errorf("want a whole number, got %s", show(data))
}

// boolHook takes JSON booleans and the strings strconv.ParseBool accepts, nothing else (no 0/1).
func boolHook(from, to reflect.Type, data any) (any, error) {
	if to.Kind() != reflect.Bool {
		return data, nil
	}
	switch t := data.(type) {
	case bool:
		return t, nil
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(t))
		if err != nil {
			return nil, fmt.Errorf("want true or false, got %q", t)
		}
		return b, nil
	}
	return nil, fmt.Errorf("want true or false, got %s", show(data))
}

// scalarStringHook trims strings and renders numbers and booleans as a user wrote them
// ({"NSQK_MAX_ATTEMPTS": 10} -> "10", true -> "true").
func scalarStringHook(from, to reflect.Type, data any) (any, error) {
	if to.Kind() != reflect.String {
		return data, nil
	}
	switch t := data.(type) {
	case string:
		return strings.TrimSpace(t), nil
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64), nil
	case bool:
		return strconv.FormatBool(t), nil
	case int:
		return strconv.Itoa(t), nil
	}
	return nil, fmt.Errorf("want a string, number or boolean, got %T", data)
}
