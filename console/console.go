package console

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Prefix is the path the console is served under.
const Prefix = "/console/"

// CSP is the Content-Security-Policy of every console answer: nothing but
// the console's own stylesheet and images, no scripts, no framing.
const CSP = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'"

// maxKeysShown bounds the keys the policy page lists; a filter narrows
// them.
const maxKeysShown = 200

//go:embed templates/*.html static/*
var files embed.FS

// Options configure a Handler.
type Options struct {
	// Source gives the pages their data. Required.
	Source Source
	// BearerOK reports whether an Authorization header carries the admin
	// token (constant-time). Required.
	BearerOK func(header string) bool
	// TokenOK reports whether a token typed into the login form is the
	// admin token (constant-time). Required.
	TokenOK func(token string) bool
	// LoginFailed is called for each wrong token, typed into the form or
	// sent as a Bearer header (a counter); optional.
	LoginFailed func()
	// LoginThrottled is called for each attempt refused unchecked because
	// its address sent too many wrong tokens (a counter); optional.
	LoginThrottled func()
	// CookieKey signs the session cookies. Replicas given the same key
	// (derived from the admin token) accept each other's sessions, which
	// also outlive a restart; changing the key ends every session. Empty:
	// a random key, so a restart ends every login.
	CookieKey []byte
	// SessionTTL is how long a login lasts. Default 12 h.
	SessionTTL time.Duration
	// Logger receives errors rendering pages (never a token). Default
	// slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Handler serves the console under Prefix.
type Handler struct {
	o     Options
	key   []byte
	guard loginGuard
	pages map[string]*template.Template
	css   []byte
}

// New returns a console Handler.
func New(o Options) (*Handler, error) {
	if o.Source == nil || o.BearerOK == nil || o.TokenOK == nil {
		return nil, errors.New("console: Source, BearerOK and TokenOK are required")
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = 12 * time.Hour
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.LoginFailed == nil {
		o.LoginFailed = func() {}
	}
	if o.LoginThrottled == nil {
		o.LoginThrottled = func() {}
	}
	h := &Handler{o: o, pages: map[string]*template.Template{}, key: o.CookieKey}
	if len(h.key) == 0 {
		h.key = make([]byte, 32)
		if _, err := rand.Read(h.key); err != nil {
			return nil, fmt.Errorf("console: cookie key: %w", err)
		}
	}
	css, err := fs.ReadFile(files, "static/style.css")
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	h.css = css
	for _, name := range []string{"login", "overview", "user", "team", "requests", "policy", "providers", "notfound"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", name, err)
		}
		h.pages[name] = t
	}
	return h, nil
}

var funcs = template.FuncMap{
	"num": func(v float64) string {
		if v == float64(int64(v)) {
			return fmt.Sprintf("%d", int64(v))
		}
		return fmt.Sprintf("%.2f", v)
	},
	"pct": func(v float64) string { return fmt.Sprintf("%.1f%%", 100*v) },
	"usd": func(v float64) string {
		if v != 0 && v < 0.01 {
			return fmt.Sprintf("$%.6f", v) // a few requests' worth
		}
		return fmt.Sprintf("$%.4f", v)
	},
	"dur": func(d time.Duration) string {
		switch {
		case d == 0:
			return "0"
		case d < 10*time.Millisecond:
			return d.Round(10 * time.Microsecond).String()
		case d < time.Second:
			return d.Round(time.Millisecond).String()
		}
		return d.Round(time.Second).String()
	},
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12]
		}
		return s
	},
	"requestsURL": func(user, key string) string {
		v := url.Values{"user": {user}}
		if key != "" {
			v.Set("key", key)
		}
		return Prefix + "requests?" + v.Encode()
	},
	"teamURL": func(team string) string { return Prefix + "teams/" + url.PathEscape(team) },
	"userURL": func(user, key string) string {
		u := Prefix + "users/" + url.PathEscape(user)
		if key != "" {
			u += "?key=" + url.QueryEscape(key)
		}
		return u
	},
}

// page is what every template gets.
type page struct {
	// Title is the page's title; Nav the active menu entry.
	Title, Nav string
	// Data is the page's own data.
	Data any
	// Error is a message shown above the page.
	Error string
}

// ServeHTTP routes a request under Prefix.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", CSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-store")
	rest := strings.TrimPrefix(r.URL.Path, Prefix)
	switch rest {
	case "style.css":
		if !getOrHead(w, r) {
			return
		}
		hd.Set("Content-Type", "text/css; charset=utf-8")
		_, _ = w.Write(h.css)
		return
	case "login":
		h.login(w, r)
		return
	case "logout":
		h.logout(w, r)
		return
	}
	if a, ok := bearer(r); ok {
		if !h.checkBearer(w, r, a) {
			return
		}
	} else if !h.session(r) {
		// Never data without the token: to the login form, which comes
		// back here after.
		http.Redirect(w, r, Prefix+"login?next="+url.QueryEscape(r.URL.Path), http.StatusSeeOther)
		return
	}
	if !getOrHead(w, r) {
		return
	}
	switch {
	case rest == "":
		ov := h.o.Source.Overview()
		h.render(w, http.StatusOK, "overview", page{Title: "Overview", Nav: "overview", Data: ov})
	case rest == "policy":
		h.policy(w, r)
	case rest == "providers":
		h.render(w, http.StatusOK, "providers", page{Title: "Providers", Nav: "providers", Data: h.o.Source.Providers()})
	case rest == "requests":
		h.requests(w, r)
	case strings.HasPrefix(rest, "teams/"):
		h.team(w, r, strings.TrimPrefix(rest, "teams/"))
	case rest == "users" || strings.HasPrefix(rest, "users/"):
		h.user(w, r, strings.TrimPrefix(strings.TrimPrefix(rest, "users"), "/"))
	default:
		h.render(w, http.StatusNotFound, "notfound", page{Title: "Not found", Error: "No such page."})
	}
}

func getOrHead(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

// policyPage is the policy page's data: the view plus the filter.
type policyPage struct {
	PolicyView
	// Query is the key filter.
	Query string
}

func (h *Handler) policy(w http.ResponseWriter, r *http.Request) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	pp := policyPage{PolicyView: h.o.Source.Policy(q, maxKeysShown), Query: q}
	h.render(w, http.StatusOK, "policy", page{Title: "Policy", Nav: "policy", Data: pp})
}

func (h *Handler) user(w http.ResponseWriter, r *http.Request, name string) {
	q := r.URL.Query()
	key := q.Get("key")
	if name == "" {
		name = q.Get("user")
	}
	if name == "" && key == "" {
		h.render(w, http.StatusBadRequest, "notfound", page{Title: "User", Nav: "policy",
			Error: "Give a user name (/console/users/NAME) or a key id (?key=ID)."})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	uv, err := h.o.Source.User(ctx, key, name)
	h.answer(w, "user", page{Title: "User " + cmp.Or(uv.User, name), Nav: "policy", Data: uv}, err,
		"No key serves this user or key. An end user of a trusted app key has no key of its own: give ?key=APP.")
}

// team shows a team (/console/teams/NAME, or ?team=NAME from a form).
func (h *Handler) team(w http.ResponseWriter, r *http.Request, name string) {
	if name == "" {
		name = r.URL.Query().Get("team")
	}
	if name == "" {
		h.render(w, http.StatusBadRequest, "notfound", page{Title: "Team", Nav: "policy",
			Error: "Give a team name (/console/teams/NAME)."})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	tv, err := h.o.Source.Team(ctx, name)
	h.answer(w, "team", page{Title: "Team " + name, Nav: "policy", Data: tv}, err, "No key is in this team.")
}

// maxRequestsShown bounds the recent requests page.
const maxRequestsShown = 50

// requests shows a user's recent requests (?user=NAME&key=ID), read from
// the transcripts only when asked for: on JSONL files it scans the day's
// files.
func (h *Handler) requests(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	user, key := q.Get("user"), q.Get("key")
	if user == "" && key == "" {
		h.render(w, http.StatusBadRequest, "notfound", page{Title: "Recent requests", Nav: "policy",
			Error: "Give a user (?user=NAME) or a key id (?key=ID)."})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	rv, err := h.o.Source.Requests(ctx, key, user, maxRequestsShown)
	h.answer(w, "requests", page{Title: "Recent requests of " + cmp.Or(rv.User, user, key), Nav: "policy", Data: rv}, err,
		"No key serves this user or key.")
}

// answer renders a looked-up page: tmpl with p when err is nil; else
// 404 with notFound, 503 when the bucket store did not answer (the page
// with what p holds, under a notice) or the transcripts are off, 500
// (logged) for anything else.
func (h *Handler) answer(w http.ResponseWriter, tmpl string, p page, err error, notFound string) {
	status := http.StatusOK
	switch {
	case err == nil:
	case errors.Is(err, ErrNotFound):
		status, tmpl, p = http.StatusNotFound, "notfound", page{Title: p.Title, Nav: p.Nav, Error: notFound}
	case errors.Is(err, ErrUnavailable):
		status, p.Error = http.StatusServiceUnavailable, "The bucket store did not answer (or limits are off): no bucket state."
	case errors.Is(err, ErrNoTranscripts):
		status, tmpl, p = http.StatusServiceUnavailable, "notfound", page{Title: p.Title, Nav: p.Nav,
			Error: "Transcripts are off, or their store did not answer."}
	default:
		h.o.Logger.Warn("console: page data", "page", tmpl, "error", err)
		status, tmpl, p = http.StatusInternalServerError, "notfound", page{Title: p.Title, Error: "The page's data could not be read."}
	}
	h.render(w, status, tmpl, p)
}

// render executes a page into a buffer first, so a template error never
// leaves half a page behind.
func (h *Handler) render(w http.ResponseWriter, status int, name string, p page) {
	var b bytes.Buffer
	if err := h.pages[name].Execute(&b, p); err != nil {
		h.o.Logger.Error("console: render", "page", name, "error", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// safeNext is where a login goes on to: a console path, never another
// site ("//host", "/\host").
func safeNext(next string) string {
	if !strings.HasPrefix(next, Prefix) || strings.ContainsAny(next, "\\\r\n") || strings.HasPrefix(next, "//") ||
		slices.Contains([]string{Prefix + "login", Prefix + "logout"}, next) {
		return Prefix
	}
	return next
}
