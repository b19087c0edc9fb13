package console

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// CookieName is the console's session cookie.
const CookieName = "sluice_console"

// maxLoginBody bounds a login form's body in bytes.
const maxLoginBody = 4 << 10

// sign returns the HMAC of a session's expiry (Unix seconds) in hex.
func (h *Handler) sign(expiry string) string {
	m := hmac.New(sha256.New, h.key[:])
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

// authorized: the admin token as a Bearer header, or a live session
// cookie.
func (h *Handler) authorized(r *http.Request) bool {
	if a := r.Header.Get("Authorization"); a != "" {
		return h.o.BearerOK(a)
	}
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
		if h.authorized(r) {
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
		if !h.o.TokenOK(r.PostForm.Get("token")) {
			h.o.LoginFailed()
			h.render(w, http.StatusUnauthorized, "login", page{Title: "Sign in", Data: loginPage{Next: next},
				Error: "Wrong token."})
			return
		}
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
