package yamlfile

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

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
