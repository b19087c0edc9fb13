package yamlfile

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

const (
	maxErrors  = 20     // Decode stops collecting after this many errors
	maxAliased = 10_000 // aliases may add this many nodes, or as many as the document has
)

// Options tune Decode. The zero value is usable.
type Options struct {
	// LookupEnv resolves ${VAR} references in scalar values; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

// Doc maps YAML paths ("upstreams[0].base_url", "keys[2]", "tiers.free.rpm")
// to their line numbers. Map keys that contain dots, brackets, quotes or
// spaces appear quoted, as in `models["gpt-4.1"]`.
type Doc struct {
	file  string
	lines map[string]int
}

// File returns the file name given to Decode.
func (d *Doc) File() string {
	if d == nil {
		return ""
	}
	return d.file
}

// Line returns the line of the value at path (for a mapping entry, the line
// of its key); for a path that is absent, the line of its nearest present
// ancestor; 0 if there is none.
func (d *Doc) Line(path string) int {
	if d == nil {
		return 0
	}
	for {
		if l, ok := d.lines[path]; ok {
			return l
		}
		if path == "" {
			return 0
		}
		path = parentPath(path)
	}
}

// Errorf returns an error positioned at path.
func (d *Doc) Errorf(path, format string, args ...any) *Error {
	return &Error{File: d.File(), Line: d.Line(path), Path: path, Msg: fmt.Sprintf(format, args...)}
}

// Error is one positioned error.
type Error struct {
	File string // file name as given to Decode
	Line int    // 1-based line, 0 when unknown
	Path string // YAML path such as "upstreams[0].timeouts.connect", "" for the whole file
	Msg  string // what is wrong
}

// Error formats the error as "file:line: path: msg", leaving out ":line"
// when Line is 0 and "path: " when Path is empty.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors collects several positioned errors.
type Errors []*Error

// Error joins the errors with newlines.
func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Unwrap returns the individual errors, for errors.Is and errors.As.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// Add appends err: an *Error as is, an Errors flattened, any other error as
// an unpositioned *Error. A nil err is ignored.
func (es *Errors) Add(err error) {
	var e *Error
	var list Errors
	switch {
	case err == nil:
	case errors.As(err, &list):
		*es = append(*es, list...)
	case errors.As(err, &e) && e != nil:
		*es = append(*es, e)
	default:
		*es = append(*es, &Error{Msg: err.Error()})
	}
}

// Err returns nil when es is empty, the only *Error when there is one, and
// es itself otherwise.
func (es Errors) Err() error {
	switch len(es) {
	case 0:
		return nil
	case 1:
		return es[0]
	}
	return es
}

// Decode strictly decodes data (the contents of file name) into out, a
// non-nil pointer to a struct. It returns a Doc that remembers where every
// decoded value came from, for validation errors. An empty document leaves
// out untouched. Errors are *Error or, when there are several, Errors.
func Decode(name string, data []byte, out any, opts Options) (*Doc, error) {
	doc := &Doc{file: name, lines: map[string]int{}}
	rv := reflect.ValueOf(out)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return doc, &Error{File: name, Msg: fmt.Sprintf("yamlfile: Decode needs a non-nil pointer, got %T", out)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root, extra yaml.Node
	if err := dec.Decode(&root); err == io.EOF {
		return doc, nil
	} else if err != nil {
		return doc, parseError(name, err)
	}
	if err := dec.Decode(&extra); err == nil {
		return doc, &Error{File: name, Line: extra.Line, Msg: "multiple YAML documents are not supported"}
	} else if err != io.EOF {
		return doc, parseError(name, err)
	}
	if len(root.Content) == 0 {
		return doc, nil
	}
	orig := size(&root, nil, math.MaxInt)
	if limit := orig + max(maxAliased, orig); size(&root, map[*yaml.Node]int{}, limit+1) > limit {
		return doc, &Error{File: name, Msg: fmt.Sprintf("document too large (more than %d nodes after expanding aliases)", limit)}
	}
	d := &decoder{doc: doc, env: opts.LookupEnv, seen: map[errKey]bool{},
		bad: map[*yaml.Node]bool{}, active: map[*yaml.Node]bool{}}
	if d.env == nil {
		d.env = os.LookupEnv
	}
	n := d.normalize(root.Content[0], "")
	if n != nil && !d.stop && !isNull(n) {
		d.decode(n, rv.Elem(), "")
	}
	sort.SliceStable(d.errs, func(i, j int) bool { return d.errs[i].Line < d.errs[j].Line })
	if d.capped {
		d.errs = append(d.errs, &Error{File: name, Msg: fmt.Sprintf("too many errors (stopped after %d)", maxErrors)})
	}
	return doc, d.errs.Err()
}

var yamlLineRE = regexp.MustCompile(`(?s)^(?:yaml: )?line (\d+): (.*)$`)

// splitLine extracts the "line N: " prefix yaml.v3 puts on its messages.
func splitLine(msg string, line int) (int, string) {
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		if l, err := strconv.Atoi(m[1]); err == nil {
			return l, m[2]
		}
	}
	return line, strings.TrimPrefix(msg, "yaml: ")
}

// parseError turns a yaml.v3 syntax error into an *Error.
func parseError(name string, err error) *Error {
	line, msg := splitLine(err.Error(), 0)
	return &Error{File: name, Line: line, Msg: msg}
}

type errKey struct {
	line, col int
	msg       string
}

type decoder struct {
	doc    *Doc
	env    func(string) (string, bool)
	errs   Errors
	nerr   int                 // errors reported, including deduplicated ones
	seen   map[errKey]bool     // dedupes errors repeated through aliases
	bad    map[*yaml.Node]bool // scalars whose expansion failed
	active map[*yaml.Node]bool // anchored nodes being copied (alias cycles)
	stop   bool                // too many errors: give up
	capped bool                // stop because of maxErrors
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.add(n.Line, n.Column, path, fmt.Sprintf(format, args...))
}

func (d *decoder) add(line, col int, path, msg string) {
	d.nerr++
	k := errKey{line, col, msg} // the same node reached through another alias is reported once
	if d.stop || d.seen[k] {
		return
	}
	d.seen[k] = true
	if len(d.errs) == maxErrors {
		d.stop, d.capped = true, true
		return
	}
	d.errs = append(d.errs, &Error{File: d.doc.file, Line: line, Path: path, Msg: msg})
}

// foreign reports an error returned by an UnmarshalYAML or yaml.v3 itself.
func (d *decoder) foreign(n *yaml.Node, path string, err error) {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		for _, m := range te.Errors {
			line, msg := splitLine(m, n.Line)
			d.add(line, n.Column, path, msg)
		}
		return
	}
	line, msg := splitLine(err.Error(), n.Line)
	d.add(line, n.Column, path, msg)
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

// join appends a mapping key to path, quoting keys that need it.
func join(path, key string) string {
	if key == "" || strings.IndexFunc(key, func(r rune) bool {
		return strings.ContainsRune(`.[]"`, r) || unicode.IsSpace(r) || !unicode.IsPrint(r)
	}) >= 0 {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// parentPath removes the last element of path.
func parentPath(p string) string {
	if strings.HasSuffix(p, `"]`) {
		for i := strings.LastIndex(p, `["`); i >= 0; i = strings.LastIndex(p[:i], `["`) {
			if _, err := strconv.Unquote(p[i+1 : len(p)-1]); err == nil {
				return p[:i]
			}
		}
	}
	if i := strings.LastIndexAny(p, ".["); i >= 0 {
		return p[:i]
	}
	return ""
}

// size counts the nodes of n, saturating at limit. With a memo it follows
// aliases (counting each use), without one it counts the document as written.
func size(n *yaml.Node, memo map[*yaml.Node]int, limit int) int {
	if s, ok := memo[n]; ok {
		return s
	}
	s, kids := 1, n.Content
	if memo != nil {
		memo[n] = 1 // in progress: an alias cycle counts once, normalize reports it
		if n.Alias != nil {
			kids = []*yaml.Node{n.Alias}
		}
	}
	for _, c := range kids {
		s = min(s+size(c, memo, limit), limit)
	}
	if memo != nil {
		memo[n] = s
	}
	return s
}

// normalize returns a deep copy of n with aliases and merge keys resolved,
// scalar values env-expanded and duplicate keys reported and dropped.
// It returns nil for nodes that must be skipped.
func (d *decoder) normalize(n *yaml.Node, path string) *yaml.Node {
	if d.stop {
		return nil
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil || d.active[n.Alias] {
			d.errorf(n, path, "alias *%s refers to a node that contains it", n.Value)
			return nil
		}
		c := d.normalize(n.Alias, path)
		if c != nil {
			c.Line, c.Column = n.Line, n.Column
		}
		return c
	}
	if n.Anchor != "" {
		d.active[n] = true
		defer delete(d.active, n)
	}
	c := *n
	c.Anchor, c.Content = "", nil
	switch n.Kind {
	case yaml.ScalarNode:
		s, err := expand(n.Value, d.env)
		if err != nil {
			d.errorf(n, path, "%v", err)
			d.bad[&c] = true
		} else if s != n.Value {
			c.Value = s
			if c.Style == 0 { // plain scalar: let the tag be resolved from the new value
				c.Tag = ""
			}
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			if x := d.normalize(item, index(path, i)); x != nil {
				c.Content = append(c.Content, x)
			}
		}
	case yaml.MappingNode:
		d.mapping(n, &c, path)
	}
	return &c
}

// mapping fills c with the normalized key/value pairs of the mapping n.
func (d *decoder) mapping(n, c *yaml.Node, path string) {
	keys := map[string]*yaml.Node{}
	ks := make([]*yaml.Node, len(n.Content)) // key copies, nil when skipped
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := *n.Content[i]
		if k.Kind == yaml.AliasNode && k.Alias != nil {
			k = *k.Alias
			k.Line, k.Column = n.Content[i].Line, n.Content[i].Column
		}
		k.Anchor, ks[i] = "", &k
		switch {
		case k.Kind != yaml.ScalarNode:
			d.errorf(&k, path, "mapping keys must be scalars")
			ks[i] = nil
		case k.ShortTag() == "!!merge":
		case keys[k.Value] != nil:
			d.errorf(&k, join(path, k.Value), "duplicate key (first defined on line %d)", keys[k.Value].Line)
			ks[i] = nil
		default:
			keys[k.Value] = &k
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := ks[i], n.Content[i+1]
		if k == nil {
			continue
		}
		if k.ShortTag() == "!!merge" {
			d.merge(v, c, path, keys)
		} else if x := d.normalize(v, join(path, k.Value)); x != nil {
			c.Content = append(c.Content, k, x)
		}
	}
}

// merge adds to c the pairs of the "<<" value v whose keys are not yet in keys.
func (d *decoder) merge(v, c *yaml.Node, path string, keys map[string]*yaml.Node) {
	src := d.normalize(v, path)
	if src == nil {
		return
	}
	maps := []*yaml.Node{src}
	if src.Kind == yaml.SequenceNode {
		maps = src.Content
	}
	for _, m := range maps {
		if m.Kind != yaml.MappingNode {
			d.errorf(v, path, "merge (<<) value must be a mapping or a list of mappings")
			return
		}
		for j := 0; j+1 < len(m.Content); j += 2 {
			if k := m.Content[j]; keys[k.Value] == nil {
				keys[k.Value] = k
				c.Content = append(c.Content, k, m.Content[j+1])
			}
		}
	}
}

var (
	nodeType     = reflect.TypeFor[yaml.Node]()
	durationType = reflect.TypeFor[time.Duration]()
	yamlBools    = map[string]bool{"true": true, "True": true, "TRUE": true, "yes": true, "Yes": true, "YES": true,
		"on": true, "On": true, "ON": true, "false": false, "False": false, "FALSE": false, "no": false,
		"No": false, "NO": false, "off": false, "Off": false, "OFF": false}
)

// record remembers the line of path unless it is already known. The root
// path "" is not recorded, so that Line reports 0 for a missing top-level key.
func (d *decoder) record(path string, line int) {
	if _, ok := d.doc.lines[path]; !ok && path != "" {
		d.doc.lines[path] = line
	}
}

// recordAll records the lines of n and everything below it.
func (d *decoder) recordAll(n *yaml.Node, path string) {
	d.record(path, n.Line)
	for i, c := range n.Content {
		switch {
		case n.Kind == yaml.SequenceNode:
			d.recordAll(c, index(path, i))
		case n.Kind == yaml.MappingNode && i%2 == 1:
			p := join(path, n.Content[i-1].Value)
			d.record(p, n.Content[i-1].Line)
			d.recordAll(c, p)
		}
	}
}

// decode stores the normalized node n into the addressable value v.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	d.record(path, n.Line)
	if d.stop || d.bad[n] {
		return
	}
	if isNull(n) {
		v.SetZero()
		return
	}
	if v.Type() == nodeType {
		v.Set(reflect.ValueOf(*n))
		d.recordAll(n, path)
		return
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
		return
	}
	if u, ok := v.Addr().Interface().(yaml.Unmarshaler); ok {
		d.recordAll(n, path)
		if err := u.UnmarshalYAML(n); err != nil {
			d.foreign(n, path, err)
		}
		return
	}
	if u, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok && n.Kind == yaml.ScalarNode {
		if err := u.UnmarshalText([]byte(n.Value)); err != nil {
			if len(n.Value) > maxShownValue {
				// The parser's error quotes the value too.
				d.errorf(n, path, "cannot decode %s", ShowValue(n.Value))
			} else {
				d.errorf(n, path, "cannot decode %q: %v", n.Value, err)
			}
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Map:
		d.decodeMap(n, v, path)
	case reflect.Slice:
		d.decodeSeq(n, v, path)
	case reflect.Interface:
		var x any
		d.recordAll(n, path)
		if v.NumMethod() > 0 {
			d.errorf(n, path, "unsupported Go type %s", v.Type())
		} else if err := n.Decode(&x); err != nil {
			d.foreign(n, path, err)
		} else if x != nil {
			v.Set(reflect.ValueOf(x))
		}
	default:
		d.decodeScalar(n, v, path)
	}
}

// describe names the kind of n for "cannot decode X as Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return ShowValue(n.Value)
}

// maxShownValue is the longest value an error message quotes in full.
const maxShownValue = 24

// ShowValue quotes a value for an error message. A value longer than
// maxShownValue bytes is shown as its first 4 bytes and its length: a
// secret put in the wrong place (an API key where a number or a name
// belongs, or a ${VAR} holding one) must not reach a log line or an admin
// answer through the error that names it.
func ShowValue(s string) string {
	if len(s) <= maxShownValue {
		return strconv.Quote(s)
	}
	end := 4
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return strconv.Quote(s[:end]+"…") + fmt.Sprintf(" (%d bytes)", len(s))
}

func (d *decoder) mismatch(n *yaml.Node, path, want string) {
	d.errorf(n, path, "cannot decode %s as %s", describe(n), want)
}

// structFields maps YAML keys to field indexes, following ",inline" structs.
func structFields(t reflect.Type) map[string][]int {
	m, inl := map[string][]int{}, map[string][]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		switch {
		case tag == "-":
		case slices.Contains(strings.Split(opts, ","), "inline") && f.Type.Kind() == reflect.Struct:
			for k, idx := range structFields(f.Type) {
				inl[k] = append([]int{i}, idx...)
			}
		case f.IsExported():
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			m[name] = []int{i}
		}
	}
	for k, idx := range inl {
		if m[k] == nil {
			m[k] = idx
		}
	}
	return m
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.mismatch(n, path, "a mapping")
		return
	}
	fields := structFields(v.Type())
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		p := join(path, k.Value)
		idx, ok := fields[k.Value]
		if !ok {
			d.errorf(k, p, "unknown key%s", suggest(k.Value, fields))
			continue
		}
		d.record(p, k.Line)
		d.decode(val, v.FieldByIndex(idx), p)
	}
}

// suggest returns ` (did you mean "x"?)` for the closest known key, if any is close.
func suggest(key string, fields map[string][]int) string {
	best, bestDist := "", 3
	for name := range fields {
		if dist := editDistance(strings.ToLower(key), name); dist < bestDist || dist == bestDist && name < best {
			best, bestDist = name, dist
		}
	}
	if best == "" || bestDist >= len(key) {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	row := make([]int, len(b)+1)
	for j := range row {
		row[j] = j
	}
	for i := 1; i <= len(a); i++ {
		prev := row[0]
		row[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			prev, row[j] = row[j], min(row[j]+1, row[j-1]+1, prev+cost)
		}
	}
	return row[len(b)]
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.mismatch(n, path, "a mapping")
		return
	}
	t := v.Type()
	if v.IsNil() {
		v.Set(reflect.MakeMapWithSize(t, len(n.Content)/2))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		p := join(path, k.Value)
		d.record(p, k.Line)
		kv, vv := reflect.New(t.Key()).Elem(), reflect.New(t.Elem()).Elem()
		before := d.nerr
		d.decode(k, kv, p)
		if d.nerr != before {
			continue
		}
		d.decode(val, vv, p)
		v.SetMapIndex(kv, vv)
	}
}

func (d *decoder) decodeSeq(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.mismatch(n, path, "a list")
		return
	}
	v.Set(reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content)))
	for i, item := range n.Content {
		d.decode(item, v.Index(i), index(path, i))
	}
}

func (d *decoder) decodeScalar(n *yaml.Node, v reflect.Value, path string) {
	want := v.Kind().String()
	if v.Type() == durationType {
		want = "a duration"
	}
	if n.Kind != yaml.ScalarNode {
		d.mismatch(n, path, want)
		return
	}
	s, detail := n.Value, ""
	var err error
	switch k := v.Kind(); {
	case v.Type() == durationType:
		var dur time.Duration
		if dur, err = time.ParseDuration(s); err == nil {
			v.SetInt(int64(dur))
		} else if _, ferr := strconv.ParseFloat(s, 64); ferr == nil {
			detail = ` (missing unit, e.g. "30s" or "250ms")`
		}
	case k == reflect.String:
		v.SetString(s)
	case k == reflect.Bool:
		if b, ok := yamlBools[s]; ok {
			v.SetBool(b)
		} else {
			err = strconv.ErrSyntax
		}
	case k >= reflect.Int && k <= reflect.Int64:
		var i int64
		if i, err = strconv.ParseInt(s, 0, v.Type().Bits()); err == nil {
			v.SetInt(i)
		}
	case k >= reflect.Uint && k <= reflect.Uintptr:
		var u uint64
		if u, err = strconv.ParseUint(s, 0, v.Type().Bits()); err == nil {
			v.SetUint(u)
		}
	case k == reflect.Float32 || k == reflect.Float64:
		var f float64
		if f, err = parseFloat(s, v.Type().Bits()); err == nil {
			v.SetFloat(f)
		}
	default:
		d.errorf(n, path, "unsupported Go type %s", v.Type())
		return
	}
	if errors.Is(err, strconv.ErrRange) {
		detail = ": out of range"
	}
	if err != nil {
		d.errorf(n, path, "cannot decode %s as %s%s", ShowValue(s), want, detail)
	}
}

// parseFloat is strconv.ParseFloat plus YAML's .inf and .nan spellings.
func parseFloat(s string, bits int) (float64, error) {
	switch strings.ToLower(s) {
	case ".inf", "+.inf":
		return math.Inf(1), nil
	case "-.inf":
		return math.Inf(-1), nil
	case ".nan":
		return math.NaN(), nil
	}
	return strconv.ParseFloat(s, bits)
}
