package policy

import (
	"reflect"
	"testing"
)

func TestRouter(t *testing.T) {
	r, err := NewRouter([]RouteRule{
		{Pattern: "gpt-4o", Upstream: 1},
		{Pattern: "gpt-4o*", Upstream: 2},
		{Pattern: "gpt-*", Upstream: 3, Deployment: "dep", Fallbacks: []int{4, 1}},
		{Pattern: "*", Upstream: 4},
		{Pattern: "gpt-4o", Upstream: 9}, // shadowed by the first
	}, map[string]string{"fast": "gpt-4o-mini", "smart": "gpt-4o"})
	if err != nil {
		t.Fatal(err)
	}
	f := func(model string, want Route) {
		t.Helper()
		got, ok := r.Resolve(model)
		if !ok || !reflect.DeepEqual(got, want) {
			t.Fatalf("Resolve(%q) = %+v, %v; want %+v", model, got, ok, want)
		}
	}
	// Group is the matching rule's pattern as written: the model group label.
	f("gpt-4o", Route{Upstream: 1, Model: "gpt-4o", Group: "gpt-4o"})
	f("gpt-4o-mini", Route{Upstream: 2, Model: "gpt-4o-mini", Group: "gpt-4o*"})
	f("gpt-3.5-turbo", Route{Upstream: 3, Model: "gpt-3.5-turbo", Deployment: "dep", Fallbacks: []int{4, 1}, Group: "gpt-*"})
	f("llama3", Route{Upstream: 4, Model: "llama3", Group: "*"})
	f("fast", Route{Upstream: 2, Model: "gpt-4o-mini", Rewritten: true, Group: "gpt-4o*"})
	f("smart", Route{Upstream: 1, Model: "gpt-4o", Rewritten: true, Group: "gpt-4o"})
	if r.Default() != 4 {
		t.Fatalf("Default() = %d; want the catch-all's 4", r.Default())
	}

	noCatchAll, err := NewRouter([]RouteRule{{Pattern: "gpt-*", Upstream: 5}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := noCatchAll.Resolve("claude-3"); ok {
		t.Fatal("a model matching no rule was routed")
	}
	if noCatchAll.Default() != 5 {
		t.Fatalf("Default() = %d; want the first rule's 5", noCatchAll.Default())
	}
	if _, err := NewRouter([]RouteRule{{Pattern: "g*t*"}}, nil); err == nil {
		t.Fatal("a wildcard inside a pattern was accepted")
	}
}
