package proxy

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/flate"
	"github.com/valyala/fasthttp"

	"sluice/config"
)

const scrubKey = "sk-upstream-scrub-0123456789abcdef"

func TestScrubUpstreamKeyFromErrors(t *testing.T) {
	up := testUpstream(t, config.Upstream{Name: "u", BaseURL: "http://127.0.0.1:1/v1", APIKey: scrubKey,
		Keys: []config.UpstreamKey{{ID: "b", APIKey: "sk-pool-second-key-xyz"}, {ID: "c", APIKey: "short"}}})
	echo := `{"error":{"message":"Incorrect API key provided: ` + scrubKey + `. Also sk-pool-second-key-xyz.","code":"invalid_api_key"}}`
	f := func(status int, enc string, streamed bool, body, want string) {
		t.Helper()
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseResponse(resp)
		resp.SetStatusCode(status)
		raw := []byte(body)
		switch enc {
		case "gzip":
			raw = fasthttp.AppendGzipBytes(nil, raw)
		case "zstd":
			raw = fasthttp.AppendZstdBytes(nil, raw)
		case "deflate":
			raw = fasthttp.AppendDeflateBytes(nil, raw) // zlib
		case "br":
			raw = fasthttp.AppendBrotliBytes(nil, raw)
		case "raw-deflate":
			var b bytes.Buffer
			w, _ := flate.NewWriter(&b, flate.BestSpeed)
			_, _ = w.Write(raw)
			_ = w.Close()
			raw, enc = b.Bytes(), "deflate"
		case "bogus":
			// a coding label on plain bytes
		}
		if enc != "" {
			resp.Header.Set("Content-Encoding", enc)
		}
		if streamed {
			resp.SetBodyStream(bytes.NewReader(raw), len(raw))
		} else {
			resp.SetBody(raw)
		}
		resp.Header.Set("X-Echo", "key="+scrubKey)
		up.scrubError(resp)
		if h := string(resp.Header.Peek("X-Echo")); h != "key=[REDACTED:upstream_key]" {
			t.Fatalf("status %d: header X-Echo %q", status, h)
		}
		if streamed && status < 400 {
			// A streamed success keeps its body for the relay.
			if resp.BodyStream() == nil {
				t.Fatalf("status %d: a streamed success was read whole", status)
			}
			return
		}
		got := resp.Body()
		if streamed && resp.BodyStream() != nil {
			t.Fatalf("status %d: a streamed error answer was not read", status)
		}
		switch e := resp.Header.ContentEncoding(); string(e) {
		case "", "identity", "bogus":
		default:
			got, _ = decodeBounded(e, got, 1<<20)
		}
		if string(got) != want {
			t.Fatalf("status %d %s streamed=%v:\ngot  %s\nwant %s", status, enc, streamed, got, want)
		}
	}
	scrubbed := strings.NewReplacer(scrubKey, "[REDACTED:upstream_key]", "sk-pool-second-key-xyz", "[REDACTED:upstream_key]").Replace(echo)
	for _, streamed := range []bool{false, true} {
		f(401, "", streamed, echo, scrubbed)
		f(500, "gzip", streamed, echo, scrubbed)
		f(400, "zstd", streamed, echo, scrubbed)
		// Errors without a key, and successes, stay byte for byte.
		f(429, "", streamed, `{"error":{"message":"slow down short"}}`, `{"error":{"message":"slow down short"}}`)
		f(429, "gzip", streamed, `{"error":{"message":"slow down"}}`, `{"error":{"message":"slow down"}}`)
		f(503, "zstd", streamed, `{"error":{"message":"busy"}}`, `{"error":{"message":"busy"}}`)
		// Every coding and status of a buffered answer (issue 18, finding 8).
		for _, enc := range []string{"", "identity", "gzip", "deflate", "raw-deflate", "br", "zstd", "bogus"} {
			for _, status := range []int{200, 307, 401, 502} {
				f(status, enc, streamed, echo, scrubbed)
			}
			f(200, enc, streamed, `{"choices":[]}`, `{"choices":[]}`)
		}
	}
	// Keys under 8 bytes are not scrubbed (they would mangle text).
	if len(up.secrets) != 2 {
		t.Fatalf("secrets %q; want the two long keys", up.secrets)
	}
}

func TestScrubLogMessage(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		if got := scrubLogMessage(in); got != want {
			t.Fatalf("scrubLogMessage(%q)\ngot  %q\nwant %q", in, got, want)
		}
	}
	f(`error when reading request headers: malformed mime header: missing colon: "not a header line": buffer size=129, contents: "POST /v1/chat/completions HTTP/1.1\r\nAuthorization: Bearer sk-abc\r\n\r\n"`,
		`error when reading request headers: malformed mime header: missing colon: "not a header line": buffer size=129, contents: [not logged: may hold credentials]`)
	f(`malformed mime header: missing colon: "Authorization Bearer sk-abc-123"`, `malformed mime header: missing colon: "Authorization Bearer [REDACTED]"`)
	f(`missing colon: "api-key:sk-abc"`, `missing colon: "api-key:[REDACTED]"`)
	f(`bad line "Authorization: Basic dXNlcjpwYXNz\r\n"`, `bad line "[request bytes not logged]"`)
	f(`"Authorization: Bearer sk-x"`, `"Authorization: [REDACTED]"`)
	f(`error when serving connection "127.0.0.1:1"<->"127.0.0.1:2": error when reading request headers: unsupported http version "HTTP/9" in "POST /v1/x?k=sk-abc HTTP/9\r\nHost: x\r\n\r\n": buffer size=9, contents: "POST /v1/x?k=sk-abc"`,
		`error when serving connection "127.0.0.1:1"<->"127.0.0.1:2": error when reading request headers: unsupported http version "HTTP/9" in "[request bytes not logged]": buffer size=9, contents: [not logged: may hold credentials]`)
	f(`cannot parse "GET /v1/x?key=sk-abc"`, `cannot parse "[request bytes not logged]"`)
	f("error when serving connection: read tcp: i/o timeout", "error when serving connection: read tcp: i/o timeout")
}

// TestAdminTokenCodePath reads the code of the admin token check: tokenOK
// hashes the presented token and compares digests with
// subtle.ConstantTimeCompare, nothing in the package compares the token
// any other way, and both admin entry points (the /admin/ API guard and
// /admin/transcripts) go through it.
func TestAdminTokenCodePath(t *testing.T) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi fs.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string][]string{} // function -> the calls in it, as "pkg.Name" or "Name"
	var tokenUses []string
	for _, pkg := range pkgs {
		for _, f := range pkg.Files {
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Body == nil {
					continue
				}
				ast.Inspect(fd.Body, func(n ast.Node) bool {
					switch n := n.(type) {
					case *ast.CallExpr:
						switch fn := n.Fun.(type) {
						case *ast.Ident:
							calls[fd.Name.Name] = append(calls[fd.Name.Name], fn.Name)
						case *ast.SelectorExpr:
							if x, ok := fn.X.(*ast.Ident); ok {
								calls[fd.Name.Name] = append(calls[fd.Name.Name], x.Name+"."+fn.Sel.Name)
							} else {
								calls[fd.Name.Name] = append(calls[fd.Name.Name], fn.Sel.Name)
							}
						}
					case *ast.BinaryExpr:
						// No == or != on anything named like a token, except
						// against "" or nil (is one configured?).
						if n.Op == token.EQL || n.Op == token.NEQ {
							tokenish := func(e ast.Expr) bool {
								switch e := e.(type) {
								case *ast.SelectorExpr:
									return strings.Contains(strings.ToLower(e.Sel.Name), "token")
								case *ast.Ident:
									return strings.Contains(strings.ToLower(e.Name), "token") || e.Name == "tok"
								}
								return false
							}
							empty := func(e ast.Expr) bool {
								if id, ok := e.(*ast.Ident); ok {
									return id.Name == "nil"
								}
								l, ok := e.(*ast.BasicLit)
								return ok && l.Value == `""`
							}
							if (tokenish(n.X) && !empty(n.Y)) || (tokenish(n.Y) && !empty(n.X)) {
								tokenUses = append(tokenUses, fset.Position(n.Pos()).String())
							}
						}
					}
					return true
				})
			}
		}
	}
	has := func(fn, call string) bool { return slices.Contains(calls[fn], call) }
	if !has("tokenOK", "subtle.ConstantTimeCompare") || !has("tokenOK", "sha256.Sum256") {
		t.Fatalf("tokenOK does not hash and compare in constant time: calls %v", calls["tokenOK"])
	}
	if !has("guard", "tokenOK") {
		t.Fatalf("the admin entry point does not use tokenOK: guard %v", calls["guard"])
	}
	if len(tokenUses) > 0 {
		t.Fatalf("a token compared with == or != at %v", tokenUses)
	}
}

// TestScrubDecodeBounded: an upstream error answer that decompresses to far
// more than maxScrubBody is decoded only that far, in every coding; the
// key in it is still scrubbed when it comes first.
func TestScrubDecodeBounded(t *testing.T) {
	plain := append([]byte(`{"error":{"message":"Incorrect API key provided: sk-upstream-secret-1234"}}`), make([]byte, 16<<20)...)
	for _, enc := range []string{"gzip", "deflate", "br", "zstd"} {
		var body []byte
		switch enc {
		case "gzip":
			body = fasthttp.AppendGzipBytes(nil, plain)
		case "deflate":
			body = fasthttp.AppendDeflateBytes(nil, plain)
		case "br":
			body = fasthttp.AppendBrotliBytes(nil, plain)
		case "zstd":
			body = fasthttp.AppendZstdBytes(nil, plain)
		}
		out, err := decodeBounded([]byte(enc), body, maxScrubBody)
		if err != nil {
			t.Fatalf("%s: %v", enc, err)
		}
		if len(out) != maxScrubBody || !bytes.Equal(out, plain[:maxScrubBody]) {
			t.Fatalf("%s: decoded %d bytes; want the first %d", enc, len(out), maxScrubBody)
		}
		u := &upstream{secrets: secretsOf([]byte("Bearer sk-upstream-secret-1234"))}
		var resp fasthttp.Response
		resp.SetStatusCode(401)
		resp.Header.Set("Content-Encoding", enc)
		resp.SetBody(body)
		u.scrubError(&resp)
		if bytes.Contains(resp.Body(), []byte("sk-upstream-secret-1234")) || !bytes.Contains(resp.Body(), scrubbedKey) ||
			len(resp.Header.ContentEncoding()) != 0 {
			t.Fatalf("%s: not scrubbed to identity: %.100q", enc, resp.Body())
		}
	}
	if _, err := decodeBounded([]byte("compress"), []byte("x"), 10); err == nil {
		t.Fatal("an unknown coding decoded")
	}
}

// TestScrubCleanAnswerNoAllocs: scrubbing a buffered answer that holds no
// key (every answer now, successes included) allocates nothing.
func TestScrubCleanAnswerNoAllocs(t *testing.T) {
	up := testUpstream(t, config.Upstream{Name: "u", BaseURL: "http://127.0.0.1:1/v1", APIKey: scrubKey})
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	resp.SetStatusCode(200)
	resp.Header.Set("Content-Type", "application/json")
	resp.Header.Set("X-Request-Id", "req_123")
	resp.SetBody([]byte(`{"choices":[{"message":{"content":"hello"}}],"usage":{"total_tokens":3}}`))
	if n := testing.AllocsPerRun(200, func() { up.scrubError(resp) }); n != 0 {
		t.Fatalf("scrubError allocates %v times per clean answer", n)
	}
}
