package policy

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"sluice/internal/yamlfile"
)

// fuzzEnv is the environment the policy fuzz target resolves key_env and
// ${VAR} against.
var fuzzEnv = env(map[string]string{"APP_KEY": "sk-app", "OTHER_KEY": "sk-other", "TIER": "pro"})

// FuzzParse checks policy.Parse on arbitrary policies.yaml text: no panic;
// a refused file's every error names the file (each line of the message
// starts with it, as `sluice validate` and the reload log print it); an
// accepted file, decoded and written back as YAML, is accepted again and
// compiles to the same policy (what Parse accepts is what it means).
func FuzzParse(f *testing.F) {
	f.Add("tiers:\n  default: {}\nkeys:\n  - id: a\n    key_env: APP_KEY\n    user: alice\n    tier: default\n")
	f.Add("tiers: {free: {rpm: 20, tpm: {limit: 40000, burst: 20000}, max_wait: 20s, models: {\"gpt-4o*\": {rpm: 5}}}}\n")
	f.Add("tiers: {t: {rpm: -1, cache: sometimes}}\nkeys: [{id: x, sha256: zz, tier: nope}]\non_store_error: maybe\n")
	f.Fuzz(func(t *testing.T, src string) {
		const name = "fuzz-policies.yaml"
		p, err := Parse(name, []byte(src), fuzzEnv)
		if err != nil {
			if p != nil {
				t.Fatal("a policy and an error")
			}
			for line := range strings.Lines(err.Error()) {
				if !strings.HasPrefix(line, name+":") {
					t.Fatalf("error line %q does not name the file; source:\n%s", line, src)
				}
			}
			var e *yamlfile.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is no *yamlfile.Error", err)
			}
			return
		}
		if p == nil {
			t.Fatal("no policy and no error")
		}
		var file File
		if _, err := yamlfile.Decode(name, []byte(src), &file, yamlfile.Options{LookupEnv: fuzzEnv}); err != nil {
			t.Fatalf("Parse accepted what Decode refuses: %v", err)
		}
		out, err := yaml.Marshal(&file)
		if err != nil {
			t.Fatalf("marshal the accepted file: %v", err)
		}
		if strings.Contains(string(out), "$") {
			return // the written-back text would be expanded again
		}
		p2, err := Parse(name, out, fuzzEnv)
		if err != nil {
			t.Fatalf("accepted policy, written back, is refused: %v\nsource:\n%s\nwritten:\n%s", err, src, out)
		}
		if d := Diff(p, p2); len(d) > 0 {
			t.Fatalf("accepted policy, written back, differs: %q\nsource:\n%s\nwritten:\n%s", d, src, out)
		}
		normalize(p)
		normalize(p2)
		if !reflect.DeepEqual(p, p2) {
			t.Fatalf("accepted policy, written back, compiles differently:\nsource:\n%s\nwritten:\n%s", src, out)
		}
	})
}

// normalize makes empty maps and slices nil, as written-back YAML has
// "users: {}" where the source had nothing, and clears the compile order.
func normalize(p *Policy) {
	p.gen = 0
	if len(p.users) == 0 {
		p.users = nil
	}
	if len(p.Skipped) == 0 {
		p.Skipped = nil
	}
	if len(p.UnmatchedUsers) == 0 {
		p.UnmatchedUsers = nil
	}
	if len(p.Prices.specs) == 0 {
		p.Prices.specs = nil
	}
	for _, k := range p.keys {
		if len(k.CacheNamespaces) == 0 {
			k.CacheNamespaces = nil
		}
		if len(k.EndUsers) == 0 {
			k.EndUsers = nil
		}
		if len(k.Endpoints) == 0 {
			k.Endpoints = nil
		}
		if len(k.Models) == 0 {
			k.Models = nil
		}
	}
	for _, t := range p.Tiers {
		if len(t.Models) == 0 {
			t.Models = nil
		}
	}
}
