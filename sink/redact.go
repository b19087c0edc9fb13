package sink

import (
	"fmt"
	"regexp"
	"strings"
)

// RedactRule replaces every match of Pattern with Replace.
type RedactRule struct {
	// Pattern is a Go regular expression (RE2 syntax).
	Pattern string `yaml:"pattern"`
	// Replace is the replacement; $1-style group references work.
	Replace string `yaml:"replace"`
	// Hint, when set, is text (ASCII, matched without regard to case) that
	// every match contains; text without it skips the regular expression,
	// which keeps the common case (no secret) cheap.
	Hint string `yaml:"hint"`
}

// DefaultRedactRules scrub the secrets most often pasted into chats: API
// keys of the OpenAI and Sluice shape, AWS access keys, bearer tokens and
// PEM private keys. They apply when the configuration names no rules.
var DefaultRedactRules = []RedactRule{
	{Pattern: `sk-[A-Za-z0-9_\-]{16,}`, Replace: "[REDACTED:api_key]", Hint: "sk-"},
	{Pattern: `AKIA[0-9A-Z]{16}`, Replace: "[REDACTED:aws_key]", Hint: "akia"},
	{Pattern: `(?i)bearer\s+[A-Za-z0-9._~+/\-]{16,}=*`, Replace: "Bearer [REDACTED]", Hint: "bearer"},
	{Pattern: `-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----`, Replace: "[REDACTED:private_key]", Hint: "private key-----"},
}

// Redactor applies compiled rules to the free-text fields of a record. The
// zero value and nil redact nothing. It is safe for concurrent use.
type Redactor struct {
	rules []compiledRule
}

type compiledRule struct {
	re      *regexp.Regexp
	replace string
	hint    string // lower case
}

// NewRedactor compiles rules; an invalid pattern is an error naming it.
func NewRedactor(rules []RedactRule) (*Redactor, error) {
	r := &Redactor{}
	for i, rule := range rules {
		re, err := regexp.Compile(rule.Pattern)
		if err != nil {
			return nil, fmt.Errorf("redact rule %d (%q): %w", i, rule.Pattern, err)
		}
		r.rules = append(r.rules, compiledRule{re: re, replace: rule.Replace, hint: strings.ToLower(rule.Hint)})
	}
	return r, nil
}

// String scrubs s.
func (r *Redactor) String(s string) string {
	if r == nil || s == "" {
		return s
	}
	for _, c := range r.rules {
		if c.hint != "" && !containsFold(s, c.hint) {
			continue
		}
		s = c.re.ReplaceAllString(s, c.replace)
	}
	return s
}

// containsFold reports whether s contains lower (ASCII lower case) in any
// ASCII case, without allocating. Candidates are found with IndexByte (the
// vectorised search) for each case of the first byte.
func containsFold(s, lower string) bool {
	if lower == "" {
		return true
	}
	first, other := lower[0], lower[0]
	if 'a' <= first && first <= 'z' {
		other = first - ('a' - 'A')
	}
	n := len(s) - len(lower) + 1 // candidate starts are [0, n)
	// The next occurrence at or after pos of each case of the first byte:
	// -2 not searched yet, -1 none left.
	nextLo, nextUp := -2, -2
	if other == first {
		nextUp = -1
	}
	for pos := 0; pos < n; {
		if nextLo != -1 && nextLo < pos {
			nextLo = indexFrom(s[:n], first, pos)
		}
		if nextUp != -1 && nextUp < pos {
			nextUp = indexFrom(s[:n], other, pos)
		}
		i := nextLo
		if i < 0 || (nextUp >= 0 && nextUp < i) {
			i = nextUp
		}
		if i < 0 {
			return false
		}
		if equalFoldLower(s[i+1:i+len(lower)], lower[1:]) {
			return true
		}
		pos = i + 1
	}
	return false
}

// indexFrom is the index of the first c in s at or after from, or -1.
func indexFrom(s string, c byte, from int) int {
	if k := strings.IndexByte(s[from:], c); k >= 0 {
		return from + k
	}
	return -1
}

// equalFoldLower reports whether s equals lower (ASCII lower case) in any
// ASCII case.
func equalFoldLower(s, lower string) bool {
	for j := 0; j < len(lower); j++ {
		c := s[j]
		if 'A' <= c && c <= 'Z' {
			c |= 0x20
		}
		if c != lower[j] {
			return false
		}
	}
	return true
}

func (r *Redactor) Record(rec *Record) {
	if r == nil || len(r.rules) == 0 {
		return
	}
	rec.Request = r.String(rec.Request)
	rec.Response = r.String(rec.Response)
	rec.UserAgent = r.String(rec.UserAgent)
}
