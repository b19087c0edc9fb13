package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"sluice/internal/yamlfile"
)

// File is the model of policies.yaml.
type File struct {
	// Tiers are the service levels keys and users belong to, by name. The
	// limits issue adds their limits; for now a tier only has a name.
	Tiers map[string]TierSpec `yaml:"tiers"`
	// Keys are the virtual API keys clients present to Sluice.
	Keys []KeySpec `yaml:"keys"`
}

// TierSpec describes one tier.
type TierSpec struct {
	// Description is free text for humans.
	Description string `yaml:"description"`
}

// KeySpec is one virtual key. Exactly one of SHA256 and KeyEnv is set: the
// key's plaintext never appears in the file.
type KeySpec struct {
	// ID names the key in logs, metrics and transcripts. Required, unique.
	ID string `yaml:"id"`
	// SHA256 is the hex SHA-256 of the key's plaintext (see `sluice hash-key`).
	SHA256 string `yaml:"sha256"`
	// KeyEnv names an environment variable holding the plaintext key. When the
	// variable is unset or empty the key is skipped (it accepts nothing).
	KeyEnv string `yaml:"key_env"`
	// User is the user this key belongs to. Required unless Trusted; a
	// trusted key without a user stands for the user named like its ID.
	User string `yaml:"user"`
	// Team groups users for shared namespaces and reporting. Default: User.
	Team string `yaml:"team"`
	// Tier names an entry of tiers. Required.
	Tier string `yaml:"tier"`
	// Trusted marks an app key that may name its end user per request, with
	// the X-Sluice-User header or the body's "user" field. Default false.
	Trusted bool `yaml:"trusted"`
}

// Policy is a compiled, immutable policies.yaml. It is safe for concurrent
// use; a reload builds a new one and swaps it in whole.
type Policy struct {
	keys map[[sha256.Size]byte]*Key
	// Tiers are the known tier names.
	Tiers map[string]TierSpec
	// Skipped lists the IDs of keys whose key_env variable was unset.
	Skipped []string
}

// Key is a compiled virtual key.
type Key struct {
	// ID is the key's id from the file.
	ID string
	// User is the key's own user.
	User string
	// Team is the key's team.
	Team string
	// Tier is the key's tier.
	Tier string
	// Trusted reports whether the key may name its end user.
	Trusted bool
}

// Principal is who a request acts for.
type Principal struct {
	// KeyID is the virtual key's id.
	KeyID string
	// User is the end user: the key's user, or for a trusted key the user it
	// named.
	User string
	// Team is the key's team.
	Team string
	// Tier is the tier whose limits apply.
	Tier string
}

// MaxUserLen is the longest end-user name a trusted key may assert, in bytes.
const MaxUserLen = 256

// Principal returns who a request with this key acts for. endUser is what a
// trusted key asserted ("" for none); it is ignored for other keys.
func (k *Key) Principal(endUser string) Principal {
	p := Principal{KeyID: k.ID, User: k.User, Team: k.Team, Tier: k.Tier}
	if k.Trusted && endUser != "" {
		p.User = endUser
	}
	return p
}

// Identify finds the key whose plaintext is secret. The secret is hashed and
// looked up by hash, so no plaintext is ever compared.
func (p *Policy) Identify(secret []byte) (*Key, bool) {
	if len(secret) == 0 {
		return nil, false
	}
	k, ok := p.keys[sha256.Sum256(secret)]
	return k, ok
}

// HashKey returns the hex SHA-256 of a key's plaintext, the form policies.yaml
// stores.
func HashKey(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// LoadFile reads and compiles a policies.yaml file.
func LoadFile(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read policies: %w", err)
	}
	return Parse(path, data, nil)
}

// Parse decodes, validates and compiles a policies.yaml document. name is
// used in error messages; lookupEnv resolves key_env and ${VAR} references
// (nil: the process environment). Errors carry file, line and YAML path.
func Parse(name string, data []byte, lookupEnv func(string) (string, bool)) (*Policy, error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	var f File
	doc, err := yamlfile.Decode(name, data, &f, yamlfile.Options{LookupEnv: lookupEnv})
	if err != nil {
		return nil, err
	}
	return compile(&f, doc, lookupEnv)
}

func compile(f *File, doc *yamlfile.Doc, lookupEnv func(string) (string, bool)) (*Policy, error) {
	var errs yamlfile.Errors
	add := func(path, format string, args ...any) { errs.Add(doc.Errorf(path, format, args...)) }

	p := &Policy{keys: make(map[[sha256.Size]byte]*Key, len(f.Keys)), Tiers: f.Tiers}
	if p.Tiers == nil {
		p.Tiers = map[string]TierSpec{}
	}
	ids := make(map[string]bool, len(f.Keys))
	for i, ks := range f.Keys {
		path := fmt.Sprintf("keys[%d]", i)
		switch {
		case ks.ID == "":
			add(path+".id", "is required")
		case ids[ks.ID]:
			add(path+".id", "duplicate key id %q", ks.ID)
		}
		ids[ks.ID] = true
		if ks.User == "" && !ks.Trusted {
			add(path+".user", "is required (only a trusted key may leave it out)")
		}
		if len(ks.User) > MaxUserLen {
			add(path+".user", "longer than %d bytes", MaxUserLen)
		}
		if ks.Tier == "" {
			add(path+".tier", "is required")
		} else if _, ok := p.Tiers[ks.Tier]; !ok {
			add(path+".tier", "unknown tier %q", ks.Tier)
		}
		var sum [sha256.Size]byte
		switch {
		case ks.SHA256 != "" && ks.KeyEnv != "":
			add(path, "set sha256 or key_env, not both")
			continue
		case ks.SHA256 != "":
			b, err := hex.DecodeString(strings.ToLower(ks.SHA256))
			if err != nil || len(b) != sha256.Size {
				add(path+".sha256", "must be 64 hex digits (see `sluice hash-key`)")
				continue
			}
			copy(sum[:], b)
		case ks.KeyEnv != "":
			v, _ := lookupEnv(ks.KeyEnv)
			if v == "" {
				p.Skipped = append(p.Skipped, ks.ID)
				continue
			}
			sum = sha256.Sum256([]byte(v))
		default:
			add(path, "one of sha256 or key_env is required")
			continue
		}
		if prev, dup := p.keys[sum]; dup {
			add(path, "same key as %q", prev.ID)
			continue
		}
		k := &Key{ID: ks.ID, User: ks.User, Team: ks.Team, Tier: ks.Tier, Trusted: ks.Trusted}
		if k.User == "" {
			k.User = k.ID
		}
		if k.Team == "" {
			k.Team = k.User
		}
		p.keys[sum] = k
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return p, nil
}
