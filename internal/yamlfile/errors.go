package yamlfile

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

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
