// Package console is Sluice's read-only web console: server-rendered pages
// on the admin listener that answer an admin's daily questions (who is near
// a limit, what the queues and providers do, what the last policy change
// did) from what the process already knows.
//
// The package knows nothing of the proxy: it takes its data through Source,
// which the proxy implements, and renders it with html/template from
// embedded files. It has no JavaScript and no external assets, so the
// Content-Security-Policy can forbid everything but its own stylesheet.
//
// Every page but the login form and the stylesheet needs the admin token:
// as a Bearer header (scripts), or as a cookie the login form sets. The
// cookie holds an expiry and its HMAC under a key drawn at start, never the
// token itself.
package console
