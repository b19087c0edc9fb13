package policy

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Reasons a policy file is insecure, the values of sluice_policy_insecure's
// reason label.
const (
	// InsecureWorldWritable: every user of the host may rewrite the file,
	// and with it every key, tier and limit.
	InsecureWorldWritable = "world_writable"
	// InsecurePlaintextKey: a key_env holds what looks like a key rather
	// than the name of an environment variable, so the file holds a
	// plaintext key.
	InsecurePlaintextKey = "plaintext_key"
)

// InsecureReasons lists every reason, in the order checks report them.
var InsecureReasons = []string{InsecureWorldWritable, InsecurePlaintextKey}

// Warning is a finding about a policy file that does not stop it from
// loading. It names the file and the key ids concerned, never a key.
type Warning struct {
	// Reason is one of InsecureReasons.
	Reason string
	// Keys are the ids of the keys concerned (plaintext_key only).
	Keys []string
	// Mode is the file's permission bits (world_writable only), or its
	// directory's when Dir is set.
	Mode fs.FileMode
	// Dir reports that the file's directory is world-writable (without the
	// sticky bit), not the file.
	Dir bool
}

// String is the warning as one line, for `sluice validate`.
func (w Warning) String() string {
	switch w.Reason {
	case InsecureWorldWritable:
		if w.Dir {
			return fmt.Sprintf("the file's directory is writable by every user (mode %s, no sticky bit): anyone on the host can replace it", w.Mode)
		}
		return fmt.Sprintf("the file is writable by every user (mode %s): anyone on the host can change its keys and limits", w.Mode)
	case InsecurePlaintextKey:
		return "key_env of key(s) " + strings.Join(w.Keys, ", ") + " holds what looks like a key, not a variable name: " +
			"keep keys out of the file (sha256 from `sluice hash-key`, or key_env naming a variable); the key(s) are skipped"
	}
	return w.Reason
}

// envName is what a key_env must look like: the name of an environment
// variable. Keys (sk-…, with dashes, dots or other punctuation) do not.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// CheckFile returns the warnings about the policy file at path, compiled
// into p (nil: only the file's mode is checked). A file that cannot be
// stat'ed gives no warning; reading it reports the error.
func CheckFile(path string, p *Policy) []Warning {
	var out []Warning
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o002 != 0 {
		out = append(out, Warning{Reason: InsecureWorldWritable, Mode: fi.Mode().Perm()})
	} else if di, err := os.Stat(filepath.Dir(path)); err == nil && di.Mode().Perm()&0o002 != 0 && di.Mode()&fs.ModeSticky == 0 {
		// Anyone may rename another file over it. The sticky bit (/tmp, a
		// Kubernetes ConfigMap volume) forbids that.
		out = append(out, Warning{Reason: InsecureWorldWritable, Mode: di.Mode().Perm(), Dir: true})
	}
	if p != nil && len(p.PlaintextKeys) > 0 {
		out = append(out, Warning{Reason: InsecurePlaintextKey, Keys: p.PlaintextKeys})
	}
	return out
}

// logWarnings writes one WARN line per warning, naming the file and the key
// ids, never a key.
func logWarnings(log *slog.Logger, path string, ws []Warning) {
	for _, w := range ws {
		switch w.Reason {
		case InsecureWorldWritable:
			msg := "policy file is writable by every user; anyone on the host can change its keys and limits"
			if w.Dir {
				msg = "policy file's directory is writable by every user and not sticky; anyone on the host can replace the file"
			}
			log.Warn(msg, "file", path, "mode", w.Mode.String(), "reason", w.Reason)
		case InsecurePlaintextKey:
			log.Warn("policy file holds what looks like a plaintext key in key_env, which names an environment variable; the keys are skipped",
				"file", path, "keys", strings.Join(w.Keys, ","), "reason", w.Reason)
		}
	}
}
