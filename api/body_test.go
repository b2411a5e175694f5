package api_test

import (
	"strings"
	"testing"
)

// TestJSONBodyTooLarge: a JSON body past the 1 MiB limit is 413, saying
// so, on every kind of JSON endpoint; a broken one of normal size stays 400.
func TestJSONBodyTooLarge(t *testing.T) {
	hs := uploadServer(t, 0)
	id := newCampaign(t, hs)
	big := `{"name":"` + strings.Repeat("x", 2<<20) + `"}`
	for _, tc := range []struct {
		name, path, body string
		want             int
		code             string
	}{
		{"create, too large", "/v1/campaigns", big, 413, "too_large"},
		{"start, too large", "/v1/campaigns/" + id + "/start", big, 413, "too_large"},
		{"purge, too large", "/v1/campaigns/" + id + "/purge", big, 413, "too_large"},
		{"create, broken", "/v1/campaigns", `{"name":`, 400, "bad_json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ans struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			code := call(t, hs, "POST", tc.path, map[string]string{"Content-Type": "application/json"}, strings.NewReader(tc.body), &ans)
			if code != tc.want || ans.Error.Code != tc.code {
				t.Fatalf("%d %+v, want %d %s", code, ans.Error, tc.want, tc.code)
			}
		})
	}
}
