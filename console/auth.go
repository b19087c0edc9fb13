package console

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// CookieName is the console's session cookie.
const CookieName = "sluice_console"

// maxLoginBody bounds a login form's body in bytes.
const maxLoginBody = 4 << 10

// sign returns the HMAC of a session's expiry (Unix seconds) in hex.
func (h *Handler) sign(expiry string) string {
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte("sluice-console-session|"))
	m.Write([]byte(expiry))
	return hex.EncodeToString(m.Sum(nil))
}

// cookieValue is a session ending at exp: "EXPIRY.HMAC".
func (h *Handler) cookieValue(exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	return e + "." + h.sign(e)
}

// sessionOK checks a cookie value: a valid HMAC (constant-time) over an
// expiry still ahead.
func (h *Handler) sessionOK(v string) bool {
	e, mac, ok := strings.Cut(v, ".")
	if !ok {
		return false
	}
	if !hmac.Equal([]byte(mac), []byte(h.sign(e))) {
		return false
	}
	sec, err := strconv.ParseInt(e, 10, 64)
	return err == nil && h.o.Now().Before(time.Unix(sec, 0))
}

// bearer reports an Authorization header of the Bearer scheme: a script's
// credentials. Other schemes (a reverse proxy's Basic auth) are not the
// console's and leave the cookie to decide.
func bearer(r *http.Request) (string, bool) {
	a := r.Header.Get("Authorization")
	return a, len(a) > len("Bearer ") && strings.EqualFold(a[:len("Bearer ")], "Bearer ")
}

// session reports a live session cookie.
func (h *Handler) session(r *http.Request) bool {
	c, err := r.Cookie(CookieName)
	return err == nil && h.sessionOK(c.Value)
}

func (h *Handler) setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: value, Path: Prefix, MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
}

// loginPage is the login form's data.
type loginPage struct {
	// Next is the console path to go on to.
	Next string
}

// login shows the form (GET) or checks the token typed into it (POST): a
// wrong one answers 401 and is counted; the right one sets the session
// cookie and goes on to the page asked for.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		next := safeNext(r.URL.Query().Get("next"))
		if h.session(r) {
			http.Redirect(w, r, next, http.StatusSeeOther)
			return
		}
		h.render(w, http.StatusOK, "login", page{Title: "Sign in", Data: loginPage{Next: next}})
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
		if err := r.ParseForm(); err != nil {
			h.render(w, http.StatusBadRequest, "login", page{Title: "Sign in", Data: loginPage{Next: Prefix},
				Error: "The form could not be read."})
			return
		}
		next := safeNext(r.PostForm.Get("next"))
		if wait, ok := h.guard.allow(clientAddr(r), h.o.Now()); !ok {
			h.throttled(w, wait, "login", page{Title: "Sign in", Data: loginPage{Next: next}})
			return
		}
		if !h.o.TokenOK(r.PostForm.Get("token")) {
			h.failed(r)
			h.render(w, http.StatusUnauthorized, "login", page{Title: "Sign in", Data: loginPage{Next: next},
				Error: "Wrong token."})
			return
		}
		h.guard.forget(clientAddr(r))
		h.setCookie(w, r, h.cookieValue(h.o.Now().Add(h.o.SessionTTL)), int(h.o.SessionTTL/time.Second))
		http.Redirect(w, r, next, http.StatusSeeOther)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// logout ends the session (POST): the cookie is cleared.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h.setCookie(w, r, "", -1)
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}

// checkBearer answers a request that carries a Bearer header: true when it
// is the admin token; else it wrote 401 (a wrong token, counted) or 429
// (too many wrong tokens from this address).
func (h *Handler) checkBearer(w http.ResponseWriter, r *http.Request, header string) bool {
	if wait, ok := h.guard.allow(clientAddr(r), h.o.Now()); !ok {
		h.throttled(w, wait, "notfound", page{Title: "Sign in"})
		return false
	}
	if h.o.BearerOK(header) {
		return true
	}
	h.failed(r)
	w.Header().Set("WWW-Authenticate", `Bearer realm="sluice console"`)
	h.render(w, http.StatusUnauthorized, "notfound", page{Title: "Sign in", Error: "Wrong admin token."})
	return false
}

// failed counts a wrong token and charges it to the client's address.
func (h *Handler) failed(r *http.Request) {
	h.o.LoginFailed()
	h.guard.fail(clientAddr(r), h.o.Now())
}

// throttled answers 429 to an address that sent too many wrong tokens:
// the token is not even checked until wait has passed.
func (h *Handler) throttled(w http.ResponseWriter, wait time.Duration, name string, p page) {
	h.o.LoginThrottled()
	secs := int((wait + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	p.Error = fmt.Sprintf("Too many wrong tokens from your address: try again in %d s.", secs)
	h.render(w, http.StatusTooManyRequests, name, p)
}

// clientAddr is the request's remote IP (without the port). Behind a
// reverse proxy it is the proxy's: every client shares one allowance.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Failed-token throttling: each address may send loginBurst wrong tokens
// at once, then one per loginInterval (5 a minute); while over, its
// attempts are answered 429 without checking the token. A guessing script
// gets 7,200 tries a day per address, against a token of 128 bits or more.
const (
	loginBurst    = 5
	loginInterval = 12 * time.Second
	// maxGuarded bounds the addresses tracked; when full, the one whose
	// allowance comes back first is dropped.
	maxGuarded = 10000
)

// loginGuard is a GCRA per client address over wrong tokens.
type loginGuard struct {
	mu sync.Mutex
	// tat is each address's theoretical arrival time: its allowance is
	// full again then.
	tat map[string]time.Time
}

// allow reports whether addr may try a token now, else how long to wait.
func (g *loginGuard) allow(addr string, now time.Time) (time.Duration, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	t, ok := g.tat[addr]
	if !ok {
		return 0, true
	}
	// The next failure would push tat past now + burst·interval.
	if over := t.Add(loginInterval).Sub(now) - loginBurst*loginInterval; over > 0 {
		return over, false
	}
	return 0, true
}

// fail charges one wrong token to addr.
func (g *loginGuard) fail(addr string, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.tat == nil {
		g.tat = map[string]time.Time{}
	}
	t, ok := g.tat[addr]
	if !ok && len(g.tat) >= maxGuarded {
		g.evict(now)
	}
	if t.Before(now) {
		t = now
	}
	g.tat[addr] = t.Add(loginInterval)
}

// forget clears addr's record after a right token.
func (g *loginGuard) forget(addr string) {
	g.mu.Lock()
	delete(g.tat, addr)
	g.mu.Unlock()
}

// evict drops the addresses whose allowance is full again, or else the
// one closest to it. g.mu held.
func (g *loginGuard) evict(now time.Time) {
	var first string
	var firstT time.Time
	for a, t := range g.tat {
		if !t.After(now) {
			delete(g.tat, a)
			continue
		}
		if first == "" || t.Before(firstT) {
			first, firstT = a, t
		}
	}
	if len(g.tat) >= maxGuarded {
		delete(g.tat, first)
	}
}
