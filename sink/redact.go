package sink

import (
	"fmt"
	"regexp"
)

// RedactRule replaces every match of Pattern with Replace.
type RedactRule struct {
	// Pattern is a Go regular expression (RE2 syntax).
	Pattern string `yaml:"pattern"`
	// Replace is the replacement; $1-style group references work.
	Replace string `yaml:"replace"`
}

// DefaultRedactRules scrub the secrets most often pasted into chats: API
// keys of the OpenAI and Sluice shape, AWS access keys, bearer tokens and
// PEM private keys. They apply when the configuration names no rules.
var DefaultRedactRules = []RedactRule{
	{Pattern: `sk-[A-Za-z0-9_\-]{16,}`, Replace: "[REDACTED:api_key]"},
	{Pattern: `AKIA[0-9A-Z]{16}`, Replace: "[REDACTED:aws_key]"},
	{Pattern: `(?i)bearer\s+[A-Za-z0-9._~+/\-]{16,}=*`, Replace: "Bearer [REDACTED]"},
	{Pattern: `-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----`, Replace: "[REDACTED:private_key]"},
}

// Redactor applies compiled rules to the free-text fields of a record. The
// zero value and nil redact nothing. It is safe for concurrent use.
type Redactor struct {
	rules []compiledRule
}

type compiledRule struct {
	re      *regexp.Regexp
	replace string
}

// NewRedactor compiles rules; an invalid pattern is an error naming it.
func NewRedactor(rules []RedactRule) (*Redactor, error) {
	r := &Redactor{}
	for i, rule := range rules {
		re, err := regexp.Compile(rule.Pattern)
		if err != nil {
			return nil, fmt.Errorf("redact rule %d (%q): %w", i, rule.Pattern, err)
		}
		r.rules = append(r.rules, compiledRule{re: re, replace: rule.Replace})
	}
	return r, nil
}

// String scrubs s.
func (r *Redactor) String(s string) string {
	if r == nil || s == "" {
		return s
	}
	for _, c := range r.rules {
		s = c.re.ReplaceAllString(s, c.replace)
	}
	return s
}

// Record scrubs the record's request, response and user agent in place.
func (r *Redactor) Record(rec *Record) {
	if r == nil || len(r.rules) == 0 {
		return
	}
	rec.Request = r.String(rec.Request)
	rec.Response = r.String(rec.Response)
	rec.UserAgent = r.String(rec.UserAgent)
}
