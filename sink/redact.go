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
	anchor  int    // rarest(hint), the byte containsFold searches for
}

// NewRedactor compiles rules; an invalid pattern is an error naming it.
func NewRedactor(rules []RedactRule) (*Redactor, error) {
	r := &Redactor{}
	for i, rule := range rules {
		re, err := regexp.Compile(rule.Pattern)
		if err != nil {
			return nil, fmt.Errorf("redact rule %d (%q): %w", i, rule.Pattern, err)
		}
		hint := strings.ToLower(rule.Hint)
		r.rules = append(r.rules, compiledRule{re: re, replace: rule.Replace, hint: hint, anchor: rarest(hint)})
	}
	return r, nil
}

// String scrubs s.
func (r *Redactor) String(s string) string {
	if r == nil || s == "" {
		return s
	}
	for _, c := range r.rules {
		if c.hint != "" && !containsFold(s, c.hint, c.anchor) {
			continue
		}
		s = c.re.ReplaceAllString(s, c.replace)
	}
	return s
}

// containsFold reports whether s contains lower (ASCII lower case) in any
// ASCII case, without allocating. Candidates are found with IndexByte (the
// vectorised search) for each case of lower[a], the hint's rarest byte
// (a = rarest(lower), computed once per rule), not its first:
// the default hints start with s, a, b and p, which prose is full of, while
// '-', 'k' and 'b' come far less often.
func containsFold(s, lower string, a int) bool {
	if lower == "" {
		return true
	}
	if len(s) < len(lower) {
		return false
	}
	lo, up := lower[a], lower[a]
	if 'a' <= lo && lo <= 'z' {
		up = lo - ('a' - 'A')
	}
	// The anchor byte of a match starting at k is at k+a, for k in
	// [0, len(s)-len(lower)]: candidates are s[a:end].
	end := len(s) - len(lower) + a + 1
	// The next occurrence at or after pos of each case of the anchor:
	// -2 not searched yet, -1 none left.
	nextLo, nextUp := -2, -2
	if up == lo {
		nextUp = -1
	}
	for pos := a; pos < end; {
		if nextLo != -1 && nextLo < pos {
			nextLo = indexFrom(s[:end], lo, pos)
		}
		if nextUp != -1 && nextUp < pos {
			nextUp = indexFrom(s[:end], up, pos)
		}
		i := nextLo
		if i < 0 || (nextUp >= 0 && nextUp < i) {
			i = nextUp
		}
		if i < 0 {
			return false
		}
		if k := i - a; equalFoldLower(s[k:k+len(lower)], lower) {
			return true
		}
		pos = i + 1
	}
	return false
}

// letterFreq is the lower-case letters from the most to the least frequent
// in English text.
const letterFreq = "etaoinshrdlcumwfgypbvkjxqz"

// rarest is the index in lower of the byte least likely in text: a
// punctuation mark or digit before any letter, a rarer letter before a
// common one, a space last.
func rarest(lower string) int {
	best, bestRank := 0, -2
	for i := 0; i < len(lower); i++ {
		rank := 100 // not a letter or space
		if c := lower[i]; c == ' ' {
			rank = -1
		} else if k := strings.IndexByte(letterFreq, c); k >= 0 {
			rank = k
		}
		if rank > bestRank {
			best, bestRank = i, rank
		}
	}
	return best
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
