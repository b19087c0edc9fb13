package yamlfile

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

type timeouts struct {
	Connect time.Duration `yaml:"connect"`
	Read    time.Duration `yaml:"read"`
}

type upstream struct {
	Name     string   `yaml:"name"`
	BaseURL  string   `yaml:"base_url"`
	Timeouts timeouts `yaml:"timeouts"`
	Weight   *int     `yaml:"weight"`
	Models   []string `yaml:"models"`
}

type tier struct {
	RPM   int   `yaml:"rpm"`
	Burst uint8 `yaml:"burst"`
}

// level implements yaml.Unmarshaler.
type level int

func (l *level) UnmarshalYAML(n *yaml.Node) error {
	switch n.Value {
	case "low":
		*l = 1
	case "high":
		*l = 2
	default:
		return fmt.Errorf("unknown level %q", n.Value)
	}
	return nil
}

type base struct {
	Version int `yaml:"version"`
}

type config struct {
	base      `yaml:",inline"`
	Listen    string              `yaml:"listen"`
	Port      int                 `yaml:"port"`
	Debug     bool                `yaml:"debug"`
	Ratio     float64             `yaml:"ratio"`
	Small     int8                `yaml:"small"`
	Upstreams []upstream          `yaml:"upstreams"`
	Tiers     map[string]tier     `yaml:"tiers"`
	Templates map[string]timeouts `yaml:"templates"`
	Level     level               `yaml:"level"`
	IP        netip.Addr          `yaml:"ip"`
	Extra     any                 `yaml:"extra"`
	ByID      map[int]string      `yaml:"by_id"`
	Ptr       *tier               `yaml:"ptr"`
	Ignored   string              `yaml:"-"`
	Untagged  string
}

var testEnv = map[string]string{"HOST": "example.com", "PORT": "9090", "EMPTY": "", "KEY": "sk-123"}

func lookup(name string) (string, bool) {
	v, ok := testEnv[name]
	return v, ok
}

func ptr[T any](v T) *T { return &v }

func TestDecodeOK(t *testing.T) {
	f := func(src string, start, want config) {
		t.Helper()
		got := start
		if _, err := Decode("c.yaml", []byte(src), &got, Options{LookupEnv: lookup}); err != nil {
			t.Fatalf("Decode(%q): unexpected error:\n%v", src, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Decode(%q):\ngot  %+v\nwant %+v", src, got, want)
		}
	}
	// Empty documents leave out untouched.
	f("", config{Port: 1}, config{Port: 1})
	f("# only a comment\n", config{Port: 1}, config{Port: 1})
	f("---\n", config{Port: 1}, config{Port: 1})
	f("~\n", config{Port: 1}, config{Port: 1})

	// Scalars.
	f("listen: :8080\nport: 8080\ndebug: true\nratio: 0.5\nsmall: -128\nuntagged: u\n", config{},
		config{Listen: ":8080", Port: 8080, Debug: true, Ratio: 0.5, Small: -128, Untagged: "u"})
	f("port: 0x1F\ndebug: yes\nratio: .inf\n", config{}, config{Port: 31, Debug: true, Ratio: math.Inf(1)})
	f("port: '42'\nlisten: 123\n", config{}, config{Port: 42, Listen: "123"})
	f("listen: ~\nport:\n", config{Listen: "x", Port: 3}, config{})

	// Nested structs, slices of structs, durations, pointers.
	f(`
upstreams:
  - name: openai
    base_url: https://api.openai.com/v1
    timeouts: {connect: 250ms, read: 1m30s}
    weight: 3
    models: [gpt-4o, gpt-4o-mini]
  - name: local
    timeouts:
      connect: 0
`, config{}, config{Upstreams: []upstream{
		{Name: "openai", BaseURL: "https://api.openai.com/v1",
			Timeouts: timeouts{Connect: 250 * time.Millisecond, Read: 90 * time.Second},
			Weight:   ptr(3), Models: []string{"gpt-4o", "gpt-4o-mini"}},
		{Name: "local"},
	}})
	f("ptr: {rpm: 5}\n", config{}, config{Ptr: &tier{RPM: 5}})
	f("ptr: null\n", config{Ptr: &tier{}}, config{})
	f("upstreams: [{name: a, weight: null}]\n", config{}, config{Upstreams: []upstream{{Name: "a"}}})

	// Maps, including keys that are not plain identifiers and non-string keys.
	f("tiers:\n  free: {rpm: 10, burst: 255}\n  gpt-4.1: {rpm: 1}\n", config{},
		config{Tiers: map[string]tier{"free": {RPM: 10, Burst: 255}, "gpt-4.1": {RPM: 1}}})
	f("by_id: {1: one, 0x10: sixteen}\n", config{}, config{ByID: map[int]string{1: "one", 16: "sixteen"}})

	// Inline structs, Unmarshaler, TextUnmarshaler, any.
	f("version: 2\nlevel: high\nip: 10.0.0.1\n", config{}, config{base: base{Version: 2}, Level: 2, IP: netip.MustParseAddr("10.0.0.1")})
	f("extra: {a: [1, x], b: null}\n", config{}, config{Extra: map[string]any{"a": []any{1, "x"}, "b": nil}})

	// Environment expansion.
	f("listen: ${HOST}:${PORT}\nport: ${PORT}\n", config{}, config{Listen: "example.com:9090", Port: 9090})
	f("listen: ${NOPE}\nport: ${NOPE:-8080}\nratio: ${EMPTY:-1.5}\n", config{}, config{Port: 8080, Ratio: 1.5})
	f("listen: \"$${HOST} costs $5, ${KEY}\"\n", config{}, config{Listen: "${HOST} costs $5, sk-123"})
	f("listen: ${EMPTY}x${NOPE:-a:-b}$HOST\n", config{}, config{Listen: "xa:-b$HOST"})
	f("debug: ${NOPE:-true}\nlevel: ${NOPE:-low}\n", config{}, config{Debug: true, Level: 1})
	f("tiers:\n  ${HOST}: {rpm: 1}\n", config{}, config{Tiers: map[string]tier{"${HOST}": {RPM: 1}}}) // keys are not expanded

	// Anchors, aliases and merge keys.
	f(`
templates:
  fast: &fast {connect: 1s, read: 2s}
upstreams:
  - name: a
    timeouts: *fast
  - name: b
    timeouts:
      <<: *fast
      read: 5s
`, config{}, config{
		Templates: map[string]timeouts{"fast": {Connect: time.Second, Read: 2 * time.Second}},
		Upstreams: []upstream{
			{Name: "a", Timeouts: timeouts{Connect: time.Second, Read: 2 * time.Second}},
			{Name: "b", Timeouts: timeouts{Connect: time.Second, Read: 5 * time.Second}},
		}})
	f("templates:\n  a: &a {connect: 1s}\n  b: &b {read: 2s}\n  c: {<<: [*a, *b], connect: 3s}\n", config{}, config{
		Templates: map[string]timeouts{"a": {Connect: time.Second}, "b": {Read: 2 * time.Second},
			"c": {Connect: 3 * time.Second, Read: 2 * time.Second}}})
}

func TestDecodeErrors(t *testing.T) {
	f := func(src, want string) {
		t.Helper()
		var c config
		_, err := Decode("c.yaml", []byte(src), &c, Options{LookupEnv: lookup})
		if err == nil {
			t.Fatalf("Decode(%q): no error, want\n%s", src, want)
		}
		if err.Error() != want {
			t.Fatalf("Decode(%q):\ngot  %s\nwant %s", src, err, want)
		}
	}
	// Unknown keys, deep and at the top.
	f("upstreams:\n  - name: a\n    timeouts:\n      conect: 1s\n",
		`c.yaml:4: upstreams[0].timeouts.conect: unknown key (did you mean "connect"?)`)
	f("nonsense: 1\n", "c.yaml:1: nonsense: unknown key")
	f("ignored: x\n", "c.yaml:1: ignored: unknown key")
	f("tiers:\n  gpt-4.1:\n    rpms: 1\n", `c.yaml:3: tiers["gpt-4.1"].rpms: unknown key (did you mean "rpm"?)`)

	// Type mismatches.
	f("port: abc\n", `c.yaml:1: port: cannot decode "abc" as int`)
	f("port: 1.5\n", `c.yaml:1: port: cannot decode "1.5" as int`)
	f("debug: maybe\n", `c.yaml:1: debug: cannot decode "maybe" as bool`)
	f("listen: {a: 1}\n", "c.yaml:1: listen: cannot decode a mapping as string")
	f("listen:\n  - a\n", "c.yaml:2: listen: cannot decode a list as string")
	f("upstreams: {name: a}\n", "c.yaml:1: upstreams: cannot decode a mapping as a list")
	f("tiers: [a]\n", "c.yaml:1: tiers: cannot decode a list as a mapping")
	f("- a\n", "c.yaml:1: cannot decode a list as a mapping")
	f("by_id: {x: a}\n", `c.yaml:1: by_id.x: cannot decode "x" as int`)
	f("level: medium\n", `c.yaml:1: level: unknown level "medium"`)
	// A long value, maybe a secret in the wrong place, is not quoted whole.
	f("port: sk-proj-0123456789abcdef0123456789\n", `c.yaml:1: port: cannot decode "sk-p…" (34 bytes) as int`)
	f("ip: sk-proj-0123456789abcdef0123456789\n", `c.yaml:1: ip: cannot decode "sk-p…" (34 bytes)`)
	f("port: €€€€€€€€€\n", `c.yaml:1: port: cannot decode "€…" (27 bytes) as int`)
	f("ip: 300.1.1.1\n", `c.yaml:1: ip: cannot decode "300.1.1.1": ParseAddr("300.1.1.1"): IPv4 field has value >255`)

	// Durations.
	f("upstreams:\n- timeouts: {connect: abc}\n", `c.yaml:2: upstreams[0].timeouts.connect: cannot decode "abc" as a duration`)
	f("upstreams:\n- timeouts: {read: 30}\n", `c.yaml:2: upstreams[0].timeouts.read: cannot decode "30" as a duration (missing unit, e.g. "30s" or "250ms")`)

	// Overflow.
	f("tiers: {free: {burst: 256}}\n", `c.yaml:1: tiers.free.burst: cannot decode "256" as uint8: out of range`)
	f("tiers: {free: {burst: -1}}\n", `c.yaml:1: tiers.free.burst: cannot decode "-1" as uint8`)
	f("small: 128\n", `c.yaml:1: small: cannot decode "128" as int8: out of range`)
	f("port: 99999999999999999999\n", `c.yaml:1: port: cannot decode "99999999999999999999" as int: out of range`)

	// Duplicate keys.
	f("port: 1\nport: 2\n", "c.yaml:2: port: duplicate key (first defined on line 1)")
	f("tiers:\n  a: {}\n  b: {}\n  a: {}\n", "c.yaml:4: tiers.a: duplicate key (first defined on line 2)")

	// Environment references.
	f("listen: ${HOST\n", `c.yaml:1: listen: unterminated "${" reference (write "$${" for a literal "${")`)
	f("port: ${1X}\n", `c.yaml:1: port: invalid environment reference "${1X}"`)
	f("port: ${}\n", `c.yaml:1: port: invalid environment reference "${}"`)
	f("port: ${HOST}\n", `c.yaml:1: port: cannot decode "example.com" as int`)

	// Document-level problems.
	f("port: 1\n---\nport: 2\n", "c.yaml:2: multiple YAML documents are not supported")
	f("port: [1\n", "c.yaml:1: did not find expected ',' or ']'")
	f("a: *nope\n", "c.yaml: unknown anchor 'nope' referenced") // yaml.v3 gives no line here
	f("{[a]: 1}\n", "c.yaml:1: mapping keys must be scalars")
	f("extra: &a [*a]\n", "c.yaml:1: extra[0]: alias *a refers to a node that contains it")
	f("<<: 1\n", "c.yaml:1: merge (<<) value must be a mapping or a list of mappings")

	// Several errors are all reported, in line order.
	f("port: x\nlisten: [a]\nbogus: 1\nsmall: 1000\n", strings.Join([]string{
		`c.yaml:1: port: cannot decode "x" as int`,
		`c.yaml:2: listen: cannot decode a list as string`,
		`c.yaml:3: bogus: unknown key`,
		`c.yaml:4: small: cannot decode "1000" as int8: out of range`,
	}, "\n"))
	f("port: ${X\nport: 2\nbad: 1\n", strings.Join([]string{
		`c.yaml:1: port: unterminated "${" reference (write "$${" for a literal "${")`,
		`c.yaml:2: port: duplicate key (first defined on line 1)`,
		`c.yaml:3: bad: unknown key`,
	}, "\n"))

	// Errors inside an anchor used several times are reported once.
	f("templates:\n  a: &a {connect: x}\n  b: *a\n", `c.yaml:2: templates.a.connect: cannot decode "x" as a duration`)

	// The number of errors is capped.
	var b strings.Builder
	var want []string
	for i := range 30 {
		fmt.Fprintf(&b, "k%d: 1\n", i)
		if i < maxErrors {
			want = append(want, fmt.Sprintf("c.yaml:%d: k%d: unknown key", i+1, i))
		}
	}
	f(b.String(), strings.Join(append(want, "c.yaml: too many errors (stopped after 20)"), "\n"))
}

func TestAliasBomb(t *testing.T) {
	src := `
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
`
	var out map[string]any
	start := time.Now()
	_, err := Decode("bomb.yaml", []byte(src), &out, Options{})
	if err == nil || !strings.Contains(err.Error(), "document too large") {
		t.Fatalf("got %v, want a 'document too large' error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("alias bomb took %v", d)
	}
}

func TestDocLines(t *testing.T) {
	src := `# Sluice
upstreams:
  - name: a
    base_url: http://a
  - name: b
    timeouts:
      connect: 1s
tiers:
  free:
    rpm: 10
  "gpt-4.1":
    rpm: 1
extra:
  deep: {x: [1, 2]}
`
	var c config
	doc, err := Decode("configs/sluice.yaml", []byte(src), &c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := func(path string, want int) {
		t.Helper()
		if got := doc.Line(path); got != want {
			t.Fatalf("Line(%q) = %d, want %d", path, got, want)
		}
	}
	f("upstreams", 2)
	f("upstreams[0]", 3)
	f("upstreams[0].base_url", 4)
	f("upstreams[1]", 5)
	f("upstreams[1].timeouts", 6)
	f("upstreams[1].timeouts.connect", 7)
	f("upstreams[1].timeouts.read", 6) // absent: nearest ancestor
	f("upstreams[7].name", 2)
	f("tiers.free.rpm", 10)
	f(`tiers["gpt-4.1"]`, 11)
	f(`tiers["gpt-4.1"].rpm`, 12)
	f(`tiers["gpt-4.1"].burst`, 11)
	f("tiers.paid", 8)
	f("extra.deep.x[1]", 14)
	f("listen", 0)
	f("", 0)

	if got, want := doc.Errorf("tiers.free.rpm", "must be at most %d", 5).Error(),
		"configs/sluice.yaml:10: tiers.free.rpm: must be at most 5"; got != want {
		t.Fatalf("Errorf: got %q, want %q", got, want)
	}
	if got, want := doc.Errorf("listen", "is required").Error(), "configs/sluice.yaml: listen: is required"; got != want {
		t.Fatalf("Errorf: got %q, want %q", got, want)
	}
	if doc.File() != "configs/sluice.yaml" {
		t.Fatalf("File() = %q", doc.File())
	}
	var nilDoc *Doc
	if nilDoc.Line("x") != 0 || nilDoc.File() != "" {
		t.Fatal("nil Doc must be usable")
	}
}

func TestErrors(t *testing.T) {
	f := func(e *Error, want string) {
		t.Helper()
		if got := e.Error(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	f(&Error{File: "a.yaml", Line: 3, Path: "x.y", Msg: "bad"}, "a.yaml:3: x.y: bad")
	f(&Error{File: "a.yaml", Path: "x.y", Msg: "bad"}, "a.yaml: x.y: bad")
	f(&Error{File: "a.yaml", Line: 3, Msg: "bad"}, "a.yaml:3: bad")
	f(&Error{Msg: "bad"}, "bad")

	var es Errors
	if es.Err() != nil {
		t.Fatal("empty Errors must give a nil error")
	}
	e1 := &Error{File: "a.yaml", Line: 1, Msg: "one"}
	es.Add(nil)
	es.Add(e1)
	if es.Err() != e1 {
		t.Fatal("a single error must be returned as is")
	}
	es.Add(Errors{{File: "a.yaml", Line: 2, Msg: "two"}})
	es.Add(errors.New("three"))
	err := es.Err()
	if got, want := err.Error(), "a.yaml:1: one\na.yaml:2: two\nthree"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	var target *Error
	if !errors.As(err, &target) || target != e1 {
		t.Fatal("errors.As must find the first *Error")
	}

	if _, err := Decode("a.yaml", []byte("a: 1"), config{}, Options{}); err == nil {
		t.Fatal("a non-pointer out must be rejected")
	}
}

func TestParentPath(t *testing.T) {
	f := func(path, want string) {
		t.Helper()
		if got := parentPath(path); got != want {
			t.Fatalf("parentPath(%q) = %q, want %q", path, got, want)
		}
	}
	f("a", "")
	f("a.b", "a")
	f("a[0]", "a")
	f("a[0].b", "a[0]")
	f(`a["x.y"]`, "a")
	f(`a["x[\"]"]`, "a")
	f(`a["x.y"].z`, `a["x.y"]`)
	f(`["k"]`, "")
}

func TestExpand(t *testing.T) {
	f := func(in, want, wantErr string) {
		t.Helper()
		got, err := expand(in, lookup)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("expand(%q): got error %v, want %q", in, err, wantErr)
			}
			return
		}
		if err != nil || got != want {
			t.Fatalf("expand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	f("plain $HOST $ {x}", "plain $HOST $ {x}", "")
	f("${HOST}", "example.com", "")
	f("${NOPE}", "", "")
	f("${NOPE:-d}", "d", "")
	f("${EMPTY:-d}", "d", "")
	f("${HOST:-d}", "example.com", "")
	f("${NOPE:-}", "", "")
	f("$${HOST}", "${HOST}", "")
	f("a$${b}${PORT}c", "a${b}9090c", "")
	f("${_x9}", "", "")
	f("${HOST", "", "unterminated")
	f("${A B}", "", "invalid")
	f("${A-x}", "", "invalid")
}
