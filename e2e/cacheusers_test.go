package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// TestSecurityCacheEndUsers: the end users of one app key had one cache, so
// a hit told an end user what another had asked, and one end user's hanging
// call stalled another's identical one (the review's finding 11). By
// default each end user's cache entries and in-flight calls are its own;
// keys[].shared_cache shares them, for apps that want it.
func TestSecurityCacheEndUsers(t *testing.T) {
	for _, shared := range []bool{false, true} {
		policies := trustedPolicies()
		if shared {
			policies = strings.Replace(policies, "    trusted: true\n", "    trusted: true\n    shared_cache: true\n", 1)
		}
		e := newEnv(t, envOptions{policies: policies})
		client := e.s.client(appKey)
		ctx := testContext(t, 20*time.Second)
		question := "what did the other user ask? " + nonce()
		ask := func(user string) string {
			var resp *http.Response
			_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
				Model: openai.ChatModelGPT4oMini, Messages: userMessages(question), Temperature: openai.Float(0),
			}, option.WithHeader("X-Sluice-User", user), option.WithResponseInto(&resp))
			if err != nil {
				t.Fatalf("%s: %v", user, err)
			}
			return resp.Header.Get("X-Sluice-Cache")
		}
		got := []string{ask("alice"), ask("bob"), ask("alice")}
		want := []string{"miss", "miss", "hit"}
		if shared {
			want = []string{"miss", "hit", "hit"}
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("shared_cache %v: alice, bob, alice asked the same: %v; want %v", shared, got, want)
			}
		}
	}
}
