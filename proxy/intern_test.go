package proxy

import (
	"strconv"
	"strings"
	"testing"
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
