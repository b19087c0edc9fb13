package policy

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// plaintext is a key as a careless operator might paste it into the file.
const plaintext = "sk-proj-plaintext-0123456789abcdefABCDEF"

func plaintextPolicy(keyEnv string) string {
	return "tiers:\n  t: {rpm: 10}\nkeys:\n" +
		"  - id: good\n    key_env: GOOD_KEY\n    user: u\n    tier: t\n" +
		"  - id: pasted\n    key_env: " + keyEnv + "\n    user: v\n    tier: t\n"
}

// leaks fails the test when s holds the key or its first 12 bytes.
func leaks(t *testing.T, where, s string) {
	t.Helper()
	if strings.Contains(s, plaintext) || strings.Contains(s, plaintext[:12]) {
		t.Fatalf("%s holds the key: %s", where, s)
	}
}

func TestPlaintextKeyEnvIsFound(t *testing.T) {
	f := func(keyEnv string, want ...string) {
		t.Helper()
		p, err := Parse("p.yaml", []byte(plaintextPolicy(keyEnv)), env(map[string]string{"GOOD_KEY": "sk-good"}))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(p.PlaintextKeys, want) && (len(want) != 0 || len(p.PlaintextKeys) != 0) {
			t.Fatalf("key_env %q: PlaintextKeys %v, want %v", keyEnv, p.PlaintextKeys, want)
		}
		for _, w := range CheckFile(filepath.Join(t.TempDir(), "absent.yaml"), p) {
			leaks(t, "warning", w.String())
		}
	}
	f(plaintext, "pasted")
	f(`"`+plaintext+`"`, "pasted")
	f("sk-short", "pasted")
	f("OTHER_KEY")
	f("_x9")
	f("lower_case_name")
}

func TestCheckFileWorldWritable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policies.yaml")
	if err := os.WriteFile(path, []byte(policyWithRPM(1)), 0o600); err != nil {
		t.Fatal(err)
	}
	f := func(mode os.FileMode, want int) {
		t.Helper()
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if ws := CheckFile(path, nil); len(ws) != want || (want == 1 && ws[0].Reason != InsecureWorldWritable) {
			t.Fatalf("mode %v: warnings %+v, want %d world_writable", mode, ws, want)
		}
	}
	f(0o600, 0)
	f(0o644, 0)
	f(0o664, 0)
	f(0o666, 1)
	f(0o602, 1)
	f(0o777, 1)

	// A world-writable directory lets anyone rename a file over it, unless
	// it is sticky.
	dir := filepath.Dir(path)
	t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
	for _, c := range []struct {
		mode os.FileMode
		want bool
	}{{0o777, true}, {0o777 | os.ModeSticky, false}, {0o755, false}, {0o703, true}} {
		if err := os.Chmod(dir, c.mode); err != nil {
			t.Fatal(err)
		}
		f(0o600, map[bool]int{true: 1, false: 0}[c.want])
		if ws := CheckFile(path, nil); c.want && (!ws[0].Dir || !strings.Contains(ws[0].String(), "directory")) {
			t.Fatalf("dir mode %v: %+v", c.mode, ws)
		}
	}
}

// TestReloaderWarnsInsecure: at load and at every reload a world-writable
// file or a plaintext key_env gives a WARN line naming the file and the key
// ids (never the key) and sets sluice_policy_insecure; fixing the file
// clears it.
func TestReloaderWarnsInsecure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policies.yaml")
	if err := os.WriteFile(path, []byte(plaintextPolicy(plaintext)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	fx := newFixture(t, path, 0)
	insecure := func(reason string) float64 { return testutil.ToFloat64(fx.r.insecure.WithLabelValues(reason)) }
	check := func(step string, ww, pk float64) {
		t.Helper()
		if insecure(InsecureWorldWritable) != ww || insecure(InsecurePlaintextKey) != pk {
			t.Fatalf("%s: sluice_policy_insecure world_writable=%v plaintext_key=%v, want %v %v\n%s", step,
				insecure(InsecureWorldWritable), insecure(InsecurePlaintextKey), ww, pk, fx.log.String())
		}
		leaks(t, "the log", fx.log.String())
	}
	check("load", 1, 1)
	out := fx.log.String()
	for _, want := range []string{
		`level=WARN msg="policy file is writable by every user`, "file=" + path, "mode=-rw-rw-rw-",
		`level=WARN msg="policy file holds what looks like a plaintext key`, "keys=pasted",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("log without %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "keys=good") || strings.Contains(out, "keys=pasted,good") {
		t.Fatalf("a key with a proper key_env was named:\n%s", out)
	}

	// A chmod changes no byte: the unchanged reload still checks the mode.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.r.Reload("sighup"); err != nil {
		t.Fatal(err)
	}
	check("chmod 644", 0, 1)

	// The key moved out of the file: all clear.
	if err := os.WriteFile(path, []byte(plaintextPolicy("PASTED_KEY")), 0o644); err != nil {
		t.Fatal(err)
	}
	if ok, err := fx.r.Reload("admin"); !ok || err != nil {
		t.Fatalf("Reload: %v %v", ok, err)
	}
	check("fixed", 0, 0)

	// And back: each reload warns again.
	before := strings.Count(fx.log.String(), "plaintext key")
	if err := os.WriteFile(path, []byte(plaintextPolicy(plaintext)+"# again\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if ok, err := fx.r.Reload("watch"); !ok || err != nil {
		t.Fatalf("Reload: %v %v", ok, err)
	}
	check("pasted again", 0, 1)
	if strings.Count(fx.log.String(), "plaintext key") != before+1 {
		t.Fatalf("the reload did not warn again:\n%s", fx.log.String())
	}
}

// TestPolicyErrorsDoNotQuoteKeys: a key pasted where it does not belong
// makes the file fail to load, and the error (logged, and answered by POST
// /admin/reload) names the file, line and path but not the key.
func TestPolicyErrorsDoNotQuoteKeys(t *testing.T) {
	head := "tiers:\n  t: {rpm: 10}\nkeys:\n"
	for _, doc := range []string{
		head + "  - id: a\n    user: u\n    key: " + plaintext + "\n    tier: t\n",
		head + "  - id: a\n    user: u\n    api_key: " + plaintext + "\n    tier: t\n",
		head + "  - id: a\n    user: u\n    sha256: " + plaintext + "\n    tier: t\n",
		head + "  - id: a\n    user: u\n    sha256: " + HashKey("x") + "\n    tier: " + plaintext + "\n",
		head + "  - id: a\n    user: u\n    sha256: " + HashKey("x") + "\n    tier: t\n    trusted: true\n    user_tier: " + plaintext + "\n",
		head + "  - " + plaintext + "\n",
		head + "  - id: a\n    user: u\n    sha256: " + HashKey("x") + "\n    tier: t\n    limits: {rpm: " + plaintext + "}\n",
		head + "  - id: a\n    user: u\n    sha256: " + HashKey("x") + "\n    tier: t\n    trusted: " + plaintext + "\n",
		"on_store_error: " + plaintext + "\n" + head + "  - id: a\n    user: u\n    sha256: " + HashKey("x") + "\n    tier: t\n",
		"tiers:\n  t: {rpm: " + plaintext + "}\n",
		"tiers:\n  t: {max_wait: " + plaintext + "}\n",
	} {
		_, err := Parse("policies.yaml", []byte(doc), env(nil))
		if err == nil {
			t.Fatalf("no error for\n%s", doc)
		}
		if !strings.HasPrefix(err.Error(), "policies.yaml:") {
			t.Errorf("error without file and line: %v", err)
		}
		leaks(t, "the error", err.Error())
	}
}

// TestKeysAreKeptOnlyAsHashes reads the code path of Identify: the secret a
// client sends is only measured and hashed (no comparison of plaintext, so
// no timing signal of how much of a key matched), and a compiled policy
// holds no plaintext key anywhere, not even one read from key_env.
func TestKeysAreKeptOnlyAsHashes(t *testing.T) {
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "policy.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var identify *ast.FuncDecl
	for _, d := range file.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "Identify" && fd.Recv != nil {
			identify = fd
		}
	}
	if identify == nil {
		t.Fatal("no Identify method in policy.go")
	}
	param := identify.Type.Params.List[0].Names[0].Name
	uses := 0
	ast.Inspect(identify.Body, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			if id, ok := n.(*ast.Ident); ok && id.Name == param {
				t.Errorf("%s: %s used outside len() or sha256.Sum256()", fset.Position(id.Pos()), param)
			}
			return true
		}
		fn := ""
		switch f := call.Fun.(type) {
		case *ast.Ident:
			fn = f.Name
		case *ast.SelectorExpr:
			if x, ok := f.X.(*ast.Ident); ok {
				fn = x.Name + "." + f.Sel.Name
			}
		}
		if len(call.Args) == 1 {
			if id, ok := call.Args[0].(*ast.Ident); ok && id.Name == param && (fn == "len" || fn == "sha256.Sum256") {
				uses++
				return false // this use is fine; do not visit the identifier
			}
		}
		return true
	})
	if uses == 0 {
		t.Fatalf("Identify does not hash %s", param)
	}

	// The compiled policy: walk every reachable value for the plaintext.
	data := "tiers:\n  t: {}\nkeys:\n  - id: a\n    key_env: A_KEY\n    user: u\n    tier: t\n" +
		"  - id: b\n    sha256: " + HashKey(plaintext+"-b") + "\n    user: v\n    tier: t\n"
	p, err := Parse("p.yaml", []byte(data), env(map[string]string{"A_KEY": plaintext}))
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := p.Identify([]byte(plaintext)); !ok || k.ID != "a" {
		t.Fatal("the key_env key does not identify")
	}
	seen := map[uintptr]bool{}
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		switch v.Kind() {
		case reflect.String:
			leaks(t, path, v.String())
		case reflect.Slice, reflect.Array:
			if v.Type().Elem().Kind() == reflect.Uint8 {
				b := make([]byte, v.Len())
				for i := range b {
					b[i] = byte(v.Index(i).Uint()) // unexported fields cannot be copied
				}
				leaks(t, path, string(b))
				return
			}
			for i := range v.Len() {
				walk(v.Index(i), path+"[]")
			}
		case reflect.Map:
			for _, k := range v.MapKeys() {
				walk(k, path+".key")
				walk(v.MapIndex(k), path+".value")
			}
		case reflect.Pointer, reflect.Interface:
			if v.IsNil() {
				return
			}
			if v.Kind() == reflect.Pointer {
				if seen[v.Pointer()] {
					return
				}
				seen[v.Pointer()] = true
			}
			walk(v.Elem(), path)
		case reflect.Struct:
			for i := range v.NumField() {
				walk(v.Field(i), path+"."+v.Type().Field(i).Name)
			}
		}
	}
	walk(reflect.ValueOf(p), "Policy")
}
