package nullsink

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// putRecordsRequest is the part of a PutRecords request the sink uses. Byte slices alias the
// request body, except Data, which is decoded into the request's data buffer.
type putRecordsRequest struct {
	StreamName []byte
	StreamARN  []byte
	Records    []putEntry
}

type putEntry struct {
	Data            []byte
	PartitionKey    []byte
	ExplicitHashKey []byte // nil = none
	hasData         bool
}

// errSyntax is a malformed request body.
var errSyntax = errors.New("malformed JSON")

// scanner is a minimal JSON reader for the one request shape the sink must read fast. It
// accepts exactly JSON (RFC 8259) and is checked against encoding/json by the tests; anything it
// does not need is skipped, after being checked for well-formedness.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) expect(c byte) error {
	if s.peek() != c {
		return fmt.Errorf("%w: want %q at offset %d", errSyntax, c, s.i)
	}
	s.i++
	return nil
}

// str reads a string and returns its raw content (between the quotes) and whether it holds
// escapes; use unescape to decode those.
func (s *scanner) str() (raw []byte, escaped bool, err error) {
	if s.peek() != '"' {
		return nil, false, fmt.Errorf("%w: want a string at offset %d", errSyntax, s.i)
	}
	s.i++
	start := s.i
	// Fast path: find the closing quote; if no backslash comes before it, only control
	// characters remain to be refused (base64 data makes up nearly all of a request).
	if q := bytes.IndexByte(s.b[s.i:], '"'); q >= 0 {
		span := s.b[s.i : s.i+q]
		if bytes.IndexByte(span, '\\') < 0 {
			if hasControl(span) {
				return nil, false, fmt.Errorf("%w: control character in string", errSyntax)
			}
			s.i += q + 1
			return span[:q:q], false, nil
		}
	}
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			raw = s.b[start:s.i:s.i]
			s.i++
			return raw, escaped, nil
		case c == '\\':
			escaped = true
			if s.i+1 >= len(s.b) {
				return nil, false, errSyntax
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.b) || !isHex4(s.b[s.i+2:s.i+6]) {
					return nil, false, errSyntax
				}
				s.i += 6
			default:
				return nil, false, errSyntax
			}
		case c < 0x20:
			return nil, false, fmt.Errorf("%w: control character in string at offset %d", errSyntax, s.i)
		default:
			s.i++
		}
	}
	return nil, false, fmt.Errorf("%w: unterminated string", errSyntax)
}

// hasControl reports whether b holds a byte below 0x20, eight bytes at a time.
func hasControl(b []byte) bool {
	const lo, hi = 0x2020202020202020, 0x8080808080808080
	for len(b) >= 8 {
		x := binary.LittleEndian.Uint64(b)
		// A byte below 0x20 borrows when 0x20 is subtracted; bytes >= 0x80 are excluded by ^x.
		if (x-lo)&^x&hi != 0 {
			return true
		}
		b = b[8:]
	}
	for _, c := range b {
		if c < 0x20 {
			return true
		}
	}
	return false
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// unescape decodes a raw string content that holds escapes (rare: the SDK escapes nothing in
// base64, decimal hash keys or plain ASCII partition keys).
func unescape(raw []byte) ([]byte, error) {
	q := make([]byte, 0, len(raw)+2)
	q = append(append(append(q, '"'), raw...), '"')
	var v string
	if err := json.Unmarshal(q, &v); err != nil {
		return nil, err
	}
	return []byte(v), nil
}

// text reads a string value and returns it decoded.
func (s *scanner) text() ([]byte, error) {
	raw, esc, err := s.str()
	if err != nil || !esc {
		return raw, err
	}
	return unescape(raw)
}

// null consumes a JSON null if one is next.
func (s *scanner) null() bool {
	if s.peek() == 'n' && s.i+4 <= len(s.b) && string(s.b[s.i:s.i+4]) == "null" {
		s.i += 4
		return true
	}
	return false
}

// skip consumes any JSON value.
func (s *scanner) skip(depth int) error {
	if depth > 64 {
		return fmt.Errorf("%w: nested too deeply", errSyntax)
	}
	switch c := s.peek(); {
	case c == '"':
		_, _, err := s.str()
		return err
	case c == '{':
		s.i++
		if s.peek() == '}' {
			s.i++
			return nil
		}
		for {
			if _, _, err := s.str(); err != nil {
				return err
			}
			if err := s.expect(':'); err != nil {
				return err
			}
			if err := s.skip(depth + 1); err != nil {
				return err
			}
			if s.peek() == ',' {
				s.i++
				continue
			}
			return s.expect('}')
		}
	case c == '[':
		s.i++
		if s.peek() == ']' {
			s.i++
			return nil
		}
		for {
			if err := s.skip(depth + 1); err != nil {
				return err
			}
			if s.peek() == ',' {
				s.i++
				continue
			}
			return s.expect(']')
		}
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || '0' <= c && c <= '9':
		return s.number()
	}
	return fmt.Errorf("%w: unexpected input at offset %d", errSyntax, s.i)
}

func (s *scanner) literal(w string) error {
	if s.i+len(w) > len(s.b) || string(s.b[s.i:s.i+len(w)]) != w {
		return fmt.Errorf("%w: bad literal at offset %d", errSyntax, s.i)
	}
	s.i += len(w)
	return nil
}

// number consumes a JSON number (strict grammar).
func (s *scanner) number() error {
	b, i := s.b, s.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case digits() == 0:
		return fmt.Errorf("%w: bad number at offset %d", errSyntax, s.i)
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return fmt.Errorf("%w: bad number at offset %d", errSyntax, s.i)
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return fmt.Errorf("%w: bad number at offset %d", errSyntax, s.i)
		}
	}
	s.i = i
	return nil
}

// object calls field for each member of an object; field must consume the value.
func (s *scanner) object(field func(name []byte) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	if s.peek() == '}' {
		s.i++
		return nil
	}
	for {
		name, err := s.text()
		if err != nil {
			return err
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := field(name); err != nil {
			return err
		}
		if s.peek() == ',' {
			s.i++
			continue
		}
		return s.expect('}')
	}
}

// parsePutRecords reads a PutRecords request body into req, decoding the base64 data of every
// entry into buf (grown as needed; returned for reuse). Unknown members are skipped.
func parsePutRecords(body []byte, req *putRecordsRequest, buf []byte) ([]byte, error) {
	*req = putRecordsRequest{Records: req.Records[:0]}
	if need := base64.StdEncoding.DecodedLen(len(body)); cap(buf) < need {
		buf = make([]byte, 0, need)
	}
	buf = buf[:0]
	s := &scanner{b: body}
	err := s.object(func(name []byte) error {
		var err error
		switch string(name) {
		case "StreamName":
			if !s.null() {
				req.StreamName, err = s.text()
			}
		case "StreamARN":
			if !s.null() {
				req.StreamARN, err = s.text()
			}
		case "Records":
			if s.null() {
				return nil
			}
			if err := s.expect('['); err != nil {
				return err
			}
			if s.peek() == ']' {
				s.i++
				return nil
			}
			for {
				var e putEntry
				if buf, err = s.entry(&e, buf); err != nil {
					return err
				}
				req.Records = append(req.Records, e)
				if s.peek() == ',' {
					s.i++
					continue
				}
				return s.expect(']')
			}
		default:
			err = s.skip(0)
		}
		return err
	})
	if s.ws(); err == nil && s.i < len(s.b) {
		err = fmt.Errorf("%w: trailing data at offset %d", errSyntax, s.i)
	}
	return buf, err
}

func (s *scanner) entry(e *putEntry, buf []byte) ([]byte, error) {
	err := s.object(func(name []byte) error {
		switch string(name) {
		case "Data":
			if s.null() {
				return nil
			}
			raw, esc, err := s.str()
			if err != nil {
				return err
			}
			if esc {
				if raw, err = unescape(raw); err != nil {
					return err
				}
			}
			start := len(buf)
			n := base64.StdEncoding.DecodedLen(len(raw))
			if cap(buf)-start < n { // only when unescaping grew the text
				buf = append(buf[:start], make([]byte, n)...)[:start]
			}
			m, err := base64.StdEncoding.Decode(buf[start:start+n], raw)
			if err != nil {
				return fmt.Errorf("Data: %w", err)
			}
			buf = buf[:start+m]
			e.Data, e.hasData = buf[start:start+m:start+m], true
			return nil
		case "PartitionKey":
			if s.null() {
				return nil
			}
			v, err := s.text()
			e.PartitionKey = v
			return err
		case "ExplicitHashKey":
			if s.null() {
				return nil
			}
			v, err := s.text()
			if v == nil && err == nil {
				v = []byte{}
			}
			e.ExplicitHashKey = v
			return err
		}
		return s.skip(0)
	})
	return buf, err
}
