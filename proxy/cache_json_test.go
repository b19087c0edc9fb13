package proxy

import "testing"

func TestCacheStoresJSONOnly(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/json": true, "application/json; charset=utf-8": true, "Application/JSON": true,
		"application/problem+json": true, "text/html; charset=utf-8": false, "": false, "text/plain": false,
		"application/jsonp": false,
	} {
		if got := isJSONType([]byte(ct)); got != want {
			t.Errorf("isJSONType(%q) = %v, want %v", ct, got, want)
		}
	}
	for body, want := range map[string]bool{
		`{"id":"x","choices":[]}`: true, " {\"a\":1}\n": true, `<html></html>`: false, `{"a":1`: false,
		`[1,2]`: false, `{"a":1}{"b":2}`: false, ``: false,
	} {
		if got := isJSONObject([]byte(body)); got != want {
			t.Errorf("isJSONObject(%q) = %v, want %v", body, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = isJSONObject([]byte(`{"id":"x","choices":[{"message":{"content":"hi"}}]}`)) }); n != 0 {
		t.Fatalf("isJSONObject allocates %v times", n)
	}
}
