package bridge

import (
	"strings"
	"testing"
)

func TestExtractClassifiesBadInput(t *testing.T) {
	o := NewOptions()
	x := newKeyExtractor(&o)
	long := strings.Repeat("é", 257)
	cases := []struct {
		name, body string
		key        string
		reason     Reason
	}{
		{"ok", `{"user_id":"u000000001","seq":1}`, "u000000001", ""},
		{"ok 256 multibyte chars", `{"user_id":"` + strings.Repeat("é", 256) + `"}`, strings.Repeat("é", 256), ""},
		{"nested path default is top-level", `{"user":{"user_id":"x"},"user_id":"y"}`, "y", ""},
		{"escaped key is unescaped", `{"user_id":"a\"b"}`, `a"b`, ""},
		{"empty body", ``, "", ReasonEmptyBody},
		{"invalid json", `{"user_id":"x"`, "", ReasonInvalidJSON},
		{"not json at all", `hello`, "", ReasonInvalidJSON},
		{"raw NUL in string", "{\"user_id\":\"a\x00b\"}", "", ReasonInvalidJSON},
		{"NUL byte after document", "{\"user_id\":\"a\"}\x00", "", ReasonInvalidJSON},
		{"too deep", `{"user_id":"x","a":` + strings.Repeat("[", 65) + strings.Repeat("]", 65) + `}`, "", ReasonTooDeep},
		{"brackets in strings do not count", `{"user_id":"x","a":"` + strings.Repeat("[", 100) + `"}`, "x", ""},
		{"missing key", `{"seq":1}`, "", ReasonMissingKey},
		{"empty key", `{"user_id":""}`, "", ReasonEmptyKey},
		{"key too long", `{"user_id":"` + long + `"}`, "", ReasonKeyTooLong},
		{"128 supplementary characters are 256 UTF-16 units", `{"user_id":"` + strings.Repeat("😀", 128) + `"}`, strings.Repeat("😀", 128), ""},
		{"129 supplementary characters are too long", `{"user_id":"` + strings.Repeat("😀", 129) + `"}`, "", ReasonKeyTooLong},
		{"key not utf8", "{\"user_id\":\"a\xffb\"}", "", ReasonKeyNotUTF8},
		{"key wrong type number", `{"user_id":42}`, "", ReasonKeyWrongType},
		{"key wrong type object", `{"user_id":{"id":"x"}}`, "", ReasonKeyWrongType},
		{"key null", `{"user_id":null}`, "", ReasonKeyWrongType},
		{"key escaped NUL", `{"user_id":"a\u0000b"}`, "", ReasonKeyControlChar},
		{"top-level array", `[1,2]`, "", ReasonMissingKey},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			key, reason, detail, _ := x.extract([]byte(c.body))
			if key != c.key || reason != c.reason {
				t.Fatalf("extract = (%q, %q, %q), want (%q, %q)", key, reason, detail, c.key, c.reason)
			}
			if reason != "" && detail == "" {
				t.Fatal("a reason without a detail")
			}
		})
	}
}

func TestExtractPolicies(t *testing.T) {
	o := NewOptions()
	o.MissingKey, o.FixedKey = MissingKeyFixed, "fallback"
	x := newKeyExtractor(&o)
	if k, r, _, _ := x.extract([]byte(`{"seq":1}`)); k != "fallback" || r != "" {
		t.Fatalf("fixed: %q %q", k, r)
	}
	// Invalid documents are dead-lettered whatever the key policy.
	if _, r, _, _ := x.extract([]byte(`{`)); r != ReasonInvalidJSON {
		t.Fatalf("fixed policy on invalid JSON: %q", r)
	}
	o.MissingKey = MissingKeyRandom
	x = newKeyExtractor(&o)
	a, _, _, ra := x.extract([]byte(`{"user_id":""}`))
	b, _, _, rb := x.extract([]byte(`{"user_id":""}`))
	if a == "" || a == b || !ra || !rb {
		t.Fatalf("random keys %q %q", a, b)
	}
	o = NewOptions()
	o.AllowNumericKey, o.PartitionKey = true, "device.id"
	x = newKeyExtractor(&o)
	if k, r, _, random := x.extract([]byte(`{"device":{"id":12345}}`)); k != "12345" || r != "" || random {
		t.Fatalf("numeric nested: %q %q", k, r)
	}
}

func BenchmarkExtract(b *testing.B) {
	o := NewOptions()
	x := newKeyExtractor(&o)
	body := []byte(`{"user_id":"u000012345","seq":17,"ts":1764102000123,"lat":48.858370,"lon":2.294481,"acc":12.5,"speed":3.20,"heading":270,"alt":35.0,"battery":76,"source":"gps","device":"3f2a9c1e-8b7d-4e21-a9f0-1c2d3e4f5a6b","app":"tracker-ios/7.4.2","net":"lte"}`)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, r, _, _ := x.extract(body); r != "" {
			b.Fatal(r)
		}
	}
}

func BenchmarkDepthWithin(b *testing.B) {
	body := []byte(`{"user_id":"u000012345","seq":17,"ts":1764102000123,"lat":48.858370,"lon":2.294481,"acc":12.5,"speed":3.20,"heading":270,"alt":35.0,"battery":76,"source":"gps","device":"3f2a9c1e-8b7d-4e21-a9f0-1c2d3e4f5a6b","app":"tracker-ios/7.4.2","net":"lte"}`)
	for b.Loop() {
		if _, ok := depthWithin(body, 64); !ok {
			b.Fatal("too deep")
		}
	}
}
