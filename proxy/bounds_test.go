package proxy

import (
	"strings"
	"testing"

	"sluice/policy"
)

// TestScanRequestBounds: the numbers a reservation is computed from are
// bounded; absurd values are a 400 with OpenAI's codes, not a wrapped sum.
func TestScanRequestBounds(t *testing.T) {
	bad := func(body string, kind errKind, param, msgPart string) {
		t.Helper()
		var f reqFields
		err := scanRequest([]byte(body), &f)
		if err == nil {
			t.Fatalf("scanRequest(%s): accepted, want a %s error", body, statusTable[kind].code)
		}
		if err.kind != kind || err.param != param || !strings.Contains(err.msg, msgPart) {
			t.Fatalf("scanRequest(%s) = kind %d param %q msg %q; want kind %d param %q msg containing %q",
				body, err.kind, err.param, err.msg, kind, param, msgPart)
		}
	}
	bad(`{"max_tokens":4611686018427387904,"n":3}`, errIntegerAboveMax, "max_tokens", "<= 2147483647")
	bad(`{"max_completion_tokens":2147483648}`, errIntegerAboveMax, "max_completion_tokens", "<= 2147483647")
	bad(`{"max_output_tokens":99999999999999999999999}`, errIntegerAboveMax, "max_output_tokens", "a larger number")
	bad(`{"max_tokens":-1}`, errIntegerBelowMin, "max_tokens", ">= 0, but got -1")
	bad(`{"max_tokens":-99999999999999999999999}`, errIntegerBelowMin, "max_tokens", ">= 0")
	bad(`{"n":129}`, errIntegerAboveMax, "n", "<= 128, but got 129")
	bad(`{"n":0}`, errIntegerBelowMin, "n", ">= 1, but got 0")
	bad(`{"n":-3}`, errIntegerBelowMin, "n", ">= 1")

	var f reqFields
	if err := scanRequest([]byte(`{"max_tokens":2147483647,"n":128}`), &f); err != nil {
		t.Fatalf("the ceilings themselves: %s", err.msg)
	}
	if got, want := completionAllowance(epChat, &f, nil), int64(2147483647)*128; got != want {
		t.Fatalf("allowance at the ceilings = %d, want %d", got, want)
	}
	if statusTable[errIntegerAboveMax].status != 400 || statusTable[errIntegerBelowMin].status != 400 {
		t.Fatal("range errors must be 400s")
	}
}

// TestCompletionAllowanceSaturates: even numbers the scan would refuse (or
// an admin's huge default_max_tokens) never wrap the reservation negative.
func TestCompletionAllowanceSaturates(t *testing.T) {
	f := reqFields{maxTokens: 1 << 62, n: 3}
	if got := completionAllowance(epChat, &f, nil); got != policy.MaxReservation {
		t.Fatalf("allowance(2^62 × 3) = %d, want MaxReservation %d", got, policy.MaxReservation)
	}
	tier := &policy.Tier{DefaultMaxTokens: 1 << 62}
	f = reqFields{maxTokens: -1, n: 128}
	if got := completionAllowance(epChat, &f, tier); got != policy.MaxReservation {
		t.Fatalf("allowance(default 2^62 × 128) = %d, want MaxReservation", got)
	}
	if got := satAdd(policy.MaxReservation-1, 5); got != policy.MaxReservation {
		t.Fatalf("satAdd near the top = %d", got)
	}
	if got := satAdd(2, 3); got != 5 {
		t.Fatalf("satAdd(2, 3) = %d", got)
	}
}
