// Package configs holds the example sluice.yaml and policies.yaml, also
// embedded in the binary as its defaults when no file is named.
package configs

import _ "embed"

// Sluice is the example sluice.yaml.
//
//go:embed sluice.yaml
var Sluice []byte

// Policies is the example policies.yaml.
//
//go:embed policies.yaml
var Policies []byte
