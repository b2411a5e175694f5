package api_test

import (
	"bytes"
	"fmt"
	"net/url"
	"regexp"
	"testing"

	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
)

// TestCardNumbersRefusedEverywhere: a full card number is refused in every
// free-text field — written plainly or with dots, slashes or spaced dashes —
// and the append-only audit log, which a purge does not touch, never holds
// one.
func TestCardNumbersRefusedEverywhere(t *testing.T) {
	st, _ := startSupportStack(t, nil)
	const pan = "4111.1111.1111.1111"
	id, ids := sentCampaign(t, st, "cards", []notice.Recipient{{Email: "card.holder@example.jp", Locale: "ja"}})

	var c notice.Campaign
	teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json",
		teststack.CampaignJSON(map[string]any{"name": "paused"}), &c)
	st.Svc.Store.AddRecipients(t.Context(), c.ID, []notice.Recipient{{Email: "p@example.jp"}})

	for _, tt := range []struct {
		name, key, method, path, ctype, body string
		want                                 int
	}{
		{"campaign name", teststack.AdminKey, "POST", "/v1/campaigns", "application/json",
			string(teststack.CampaignJSON(map[string]any{"name": "Breach " + pan})), 422},
		{"upload", teststack.AdminKey, "POST", "/v1/campaigns/" + c.ID + "/recipients", "text/csv",
			"email,customer_id\nx@example.jp,4111 - 1111 - 1111 - 1111\n", 200}, // 200, the row rejected
		{"resend reason", teststack.SupportKey, "POST", fmt.Sprintf("/v1/campaigns/%s/recipients/%d/resend", id, ids[0]), "application/json",
			`{"reason":"customer read out ` + pan + ` on the phone"}`, 422},
		{"suppression reason", teststack.AdminKey, "POST", "/v1/suppressions", "application/json",
			`{"email":"s@example.jp","reason":"card 4111/1111/1111/1111"}`, 422},
		{"unsuppress reason", teststack.AdminKey, "DELETE", "/v1/suppressions/s@example.jp?reason=" + url.QueryEscape(pan), "", "", 422},
		{"purge reason", teststack.AdminKey, "POST", "/v1/campaigns/" + id + "/purge", "application/json", `{"reason":"` + pan + `"}`, 422},
		{"report reason", teststack.AdminKey, "GET", "/v1/campaigns/" + id + "/report?reason=" + url.QueryEscape(pan), "", "", 422},
		{"start", teststack.AdminKey, "POST", "/v1/campaigns/" + c.ID + "/start", "", "", 202},
		// Pause acts first and reads its optional reason after: the audit
		// log keeps the pause, not the number.
		{"pause reason", teststack.AdminKey, "POST", "/v1/campaigns/" + c.ID + "/pause", "application/json", `{"reason":"` + pan + `"}`, 200},
	} {
		code, body := teststack.Do(t, st.Base, tt.key, tt.method, tt.path, tt.ctype, []byte(tt.body), nil)
		if code != tt.want {
			t.Errorf("%s: %d %s, want %d", tt.name, code, body, tt.want)
		}
		if holdsPAN(body) {
			t.Errorf("%s: the answer echoes the number: %s", tt.name, body)
		}
		if tt.name == "upload" && !bytes.Contains(body, []byte(`"rejected_count":1`)) {
			t.Errorf("upload: the row with a card number was not rejected: %s", body)
		}
	}
	for _, q := range []string{"", "?campaign=" + c.ID} {
		if _, body := teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/audit"+q, "", nil, nil); holdsPAN(body) {
			t.Errorf("the audit log holds a card number: %s", body)
		}
	}
	var camps struct{ Campaigns []notice.Campaign }
	_, body := teststack.Do(t, st.Base, teststack.SupportKey, "GET", "/v1/campaigns", "", nil, &camps)
	if holdsPAN(body) {
		t.Errorf("a campaign holds a card number: %s", body)
	}
}

// panRun is the test number's digits, whatever separates them; "4111"
// alone is not enough: a Redis stream id (a millisecond time) may hold it.
var panRun = regexp.MustCompile(`4111[^0-9]{0,3}1111`)

func holdsPAN(b []byte) bool { return panRun.Match(b) }
