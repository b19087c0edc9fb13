package yamlfile

import (
	"fmt"
	"strings"
)

// expand replaces ${VAR} with the value of VAR ("" when unset) and
// ${VAR:-default} with default when VAR is unset or empty. $${ stands for a
// literal ${. Anything else, including a bare $VAR, is left alone.
func expand(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		if i > 0 && s[i-1] == '$' { // escaped: $${ -> ${
			b.WriteString(s[:i-1])
			b.WriteString("${")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			return "", fmt.Errorf(`unterminated "${" reference (write "$${" for a literal "${")`)
		}
		ref := s[i+2 : i+2+end]
		name, def, hasDef := strings.Cut(ref, ":-")
		if !validEnvName(name) {
			return "", fmt.Errorf("invalid environment reference %q", "${"+ref+"}")
		}
		val, _ := lookup(name)
		if hasDef && val == "" {
			val = def
		}
		b.WriteString(val)
		s = s[i+3+end:]
	}
}

// validEnvName reports whether name looks like a shell variable name.
func validEnvName(name string) bool {
	for i, c := range name {
		if c != '_' && !('a' <= c && c <= 'z') && !('A' <= c && c <= 'Z') && (i == 0 || !('0' <= c && c <= '9')) {
			return false
		}
	}
	return name != ""
}
