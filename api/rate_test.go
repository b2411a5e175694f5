package api_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/oshirase/oshirase/internal/teststack"
)

// TestCampaignRateBounds: a rate the limiter cannot honour is refused at
// creation with 422, naming the field and the smallest rate allowed (a rate
// of 0.00001 was accepted, and then every chunk of the campaign failed at
// the limiter for ever); 0 (no limit of its own) and rates from 0.001 to
// 1,000,000 a second are accepted.
func TestCampaignRateBounds(t *testing.T) {
	st, _ := startSupportStack(t, nil)
	for _, tt := range []struct {
		rate any
		want int
	}{
		{0.00001, 422},
		{0.0009, 422},
		{-1, 422},
		{2000000, 422},
		{0, 201},
		{0.001, 201},
		{0.25, 201},
		{2, 201},
		{1000000, 201},
	} {
		code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json",
			teststack.CampaignJSON(map[string]any{"rate": tt.rate}), nil)
		if code != tt.want {
			t.Errorf("rate %v: %d %s, want %d", tt.rate, code, body, tt.want)
			continue
		}
		if code != 422 {
			continue
		}
		var ans struct {
			Error struct {
				Code    string
				Details []struct{ Field, Error string }
			}
		}
		if err := json.Unmarshal(body, &ans); err != nil {
			t.Fatalf("rate %v: %s: %v", tt.rate, body, err)
		}
		d := ans.Error.Details
		if ans.Error.Code != "invalid_campaign" || len(d) != 1 || d[0].Field != "rate" ||
			!strings.Contains(d[0].Error, "smallest allowed is 0.001") {
			t.Errorf("rate %v: %s, want one detail for field rate naming the smallest allowed, 0.001", tt.rate, body)
		}
	}
}
