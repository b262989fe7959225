package config

import (
	"fmt"
	"strings"
	"time"
)

// parser collects every problem instead of stopping at the first one.
type parser struct {
	get  ContextFunc
	errs []error
}

func (p *parser) fail(key, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("context %q: %s", key, fmt.Sprintf(format, args...)))
}

// has reports whether a key is set to something other than blank.
func (p *parser) has(key string) bool {
	v := p.get(key)
	if s, ok := v.(string); ok {
		return strings.TrimSpace(s) != ""
	}
	return v != nil
}

// value decodes a key into *out; false when the key is unset or its value is unusable (reported).
func (p *parser) value(key string, out any) bool {
	v := p.get(key)
	if v == nil {
		return false
	}
	if err := decode(v, out); err != nil {
		p.fail(key, "%v", err)
		return false
	}
	return true
}

func (p *parser) str(key, def string) string {
	var s string
	if !p.value(key, &s) || s == "" {
		return def
	}
	return s
}

func (p *parser) integer(key string, def, lo, hi int) int {
	var n int
	if !p.value(key, &n) {
		return def
	}
	if n < lo || n > hi {
		p.fail(key, "%d is out of range %d..%d", n, lo, hi)
		return def
	}
	return n
}

func (p *parser) boolean(key string, def bool) bool {
	b := def
	p.value(key, &b)
	return b
}

func (p *parser) duration(key string, def, lo, hi time.Duration) time.Duration {
	var d time.Duration
	if !p.value(key, &d) {
		return def
	}
	if d < lo || d > hi {
		p.fail(key, "%s is out of range %s..%s", d, lo, hi)
		return def
	}
	return d
}

func (p *parser) list(key string) []string {
	var l []string
	p.value(key, &l)
	if len(l) == 0 {
		return nil
	}
	return l
}
