package proxy

import (
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/valyala/fasthttp"

	"sluice/policy"
)

func TestNamesIntern(t *testing.T) {
	var n names
	if s, known := n.get([]byte("gpt-4o")); s != "gpt-4o" || known {
		t.Fatalf("first get: %q %v", s, known)
	}
	n.add("gpt-4o")
	if s, known := n.get([]byte("gpt-4o")); s != "gpt-4o" || !known {
		t.Fatalf("after add: %q %v", s, known)
	}
	long := strings.Repeat("m", maxNameLen+1)
	n.add(long)
	if _, known := n.get([]byte(long)); known {
		t.Fatal("a name over maxNameLen was interned")
	}
	for i := range maxNames + 10 {
		n.add("model-" + strconv.Itoa(i))
	}
	if got := len(*n.m.Load()); got != maxNames {
		t.Fatalf("%d names interned, want the cap %d", got, maxNames)
	}
}

// TestEndUserInterned: a trusted key's end-user name is a string without an
// allocation once seen, and an invalid name is not added.
func TestEndUserInterned(t *testing.T) {
	var s Server
	key := &policy.Key{Trusted: true}
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.Set("X-Sluice-User", "alice")
	first, ok := s.endUser(&ctx, key, &reqFields{})
	if !ok || first != "alice" {
		t.Fatalf("first: %q %v", first, ok)
	}
	again, _ := s.endUser(&ctx, key, &reqFields{})
	if unsafe.StringData(again) != unsafe.StringData(first) {
		t.Error("the second request's name is a new copy")
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = s.endUser(&ctx, key, &reqFields{}) }); n != 0 {
		t.Errorf("a known end user allocates %.0f times", n)
	}
	ctx.Request.Header.Set("X-Sluice-User", "bad\x01name")
	if _, ok := s.endUser(&ctx, key, &reqFields{}); ok {
		t.Fatal("a name with a control character was accepted")
	}
	if _, known := s.endUsers.get([]byte("bad\x01name")); known {
		t.Error("an invalid name was interned")
	}
}
