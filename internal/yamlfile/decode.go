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
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

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
