package proxy

import (
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestTokenOK(t *testing.T) {
	want := sha256.Sum256([]byte("s3cret"))
	for _, c := range []struct {
		header string
		ok     bool
	}{
		{"Bearer s3cret", true},
		{"", false},
		{"s3cret", false},
		{"Bearer ", false},
		{"Bearer s3cre", false},
		{"Bearer s3cret ", false},
		// The scheme is case-insensitive, as on the API listener.
		{"bearer s3cret", true},
		{"BEARER s3cret", true},
		{"bearer  s3cret", false},
		{"Basic s3cret", false},
	} {
		if got := tokenOK(c.header, want); got != c.ok {
			t.Errorf("tokenOK(%q) = %v, want %v", c.header, got, c.ok)
		}
	}
}

func TestAdminGuard(t *testing.T) {
	call := func(s *Server, auth string) int {
		h := s.guard(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
		req := httptest.NewRequest("GET", "/admin/queues", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h(rec, req)
		return rec.Code
	}
	unset := &Server{}
	if got := call(unset, "Bearer x"); got != http.StatusNotFound {
		t.Errorf("no admin API: %d, want 404", got)
	}
	empty := &Server{}
	empty.SetAdmin(AdminOptions{})
	if got := call(empty, "Bearer "); got != http.StatusNotFound {
		t.Errorf("no token configured: %d, want 404", got)
	}
	s := &Server{}
	s.SetAdmin(AdminOptions{Token: "tok"})
	for auth, want := range map[string]int{"": 401, "Bearer tok2": 401, "Bearer to": 401, "Bearer tok": http.StatusTeapot} {
		if got := call(s, auth); got != want {
			t.Errorf("Authorization %q: %d, want %d", auth, got, want)
		}
	}
}

// TestAdminPprof: the Go profiles are on the admin listener behind the
// admin token (404 without one configured, 401 with a wrong one).
func TestAdminPprof(t *testing.T) {
	call := func(s *Server, auth string) int {
		h := AdminHandler(prometheus.NewRegistry(), s)
		req := httptest.NewRequest("GET", "/debug/pprof/cmdline", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	if got := call(&Server{}, "Bearer tok"); got != http.StatusNotFound {
		t.Errorf("no admin API: %d, want 404", got)
	}
	s := &Server{}
	s.SetAdmin(AdminOptions{Token: "tok"})
	for auth, want := range map[string]int{"": 401, "Bearer nope": 401, "Bearer tok": 200} {
		if got := call(s, auth); got != want {
			t.Errorf("Authorization %q: %d, want %d", auth, got, want)
		}
	}
}
