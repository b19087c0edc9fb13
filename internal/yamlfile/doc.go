// Package yamlfile strictly decodes Sluice's YAML configuration files.
//
// Decode parses a single YAML document with go.yaml.in/yaml/v3 and walks the
// node tree together with the target Go type, so that every problem can be
// reported as "file:line: path: message", for example
//
//	configs/sluice.yaml:14: upstreams[0].timeouts.connect: cannot decode "abc" as a duration
//
// Unknown and duplicate keys are errors, several errors are collected in one
// pass (see [Errors]), aliases and merge keys ("<<") are resolved with a cap
// against alias bombs, and ${VAR} / ${VAR:-default} references in scalar
// values are expanded from the environment before a value is decoded.
//
// The returned [Doc] remembers the line of every decoded path so that later
// semantic validation can produce equally well positioned errors with
// [Doc.Errorf].
package yamlfile
