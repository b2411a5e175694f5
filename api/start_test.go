package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/notice"
)

// TestStartRefusesNothingToSend: a start that could only make a campaign
// done for ever (no recipients), or a start time of null (a client bug
// that used to mean "now"), is refused with 422 and a reason; nothing
// changes.
func TestStartRefusesNothingToSend(t *testing.T) {
	hs := uploadServer(t, 0)
	empty := newCampaign(t, hs)
	full := newCampaign(t, hs)
	if code := call(t, hs, "POST", "/v1/campaigns/"+full+"/recipients", map[string]string{"Content-Type": "text/csv"},
		strings.NewReader(csvHeader+csvRows(1, 3)), nil); code != 200 {
		t.Fatalf("upload: %d", code)
	}
	type errAnswer struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Details []struct {
				Field string `json:"field"`
				Error string `json:"error"`
			} `json:"details"`
		} `json:"error"`
	}
	for _, tc := range []struct {
		name, id, body string
		code           string // error code expected
		field          string // field named in details, if any
		message        string // part of the message
	}{
		{"no recipients", empty, "", "no_recipients", "", "no recipients"},
		{"no recipients, scheduled", empty, `{"at":"` + time.Now().Add(48*time.Hour).UTC().Format(time.RFC3339) + `"}`, "no_recipients", "", "no recipients"},
		{"at null", full, `{"at":null}`, "invalid", "at", "null"},
		{"at null, no recipients", empty, `{"at":null}`, "invalid", "at", "null"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ans errAnswer
			code := call(t, hs, "POST", "/v1/campaigns/"+tc.id+"/start", map[string]string{"Content-Type": "application/json"}, strings.NewReader(tc.body), &ans)
			if code != 422 || ans.Error.Code != tc.code || !strings.Contains(ans.Error.Message, tc.message) {
				t.Fatalf("start: %d %+v, want 422 %s saying %q", code, ans.Error, tc.code, tc.message)
			}
			if tc.field != "" && (len(ans.Error.Details) != 1 || ans.Error.Details[0].Field != tc.field) {
				t.Errorf("details %+v, want field %s", ans.Error.Details, tc.field)
			}
			var c notice.Campaign
			call(t, hs, "GET", "/v1/campaigns/"+tc.id, nil, nil, &c)
			if c.Status != notice.CampaignDraft || c.ScheduledAt != nil {
				t.Errorf("after a refused start: %s scheduled %v, want an unscheduled draft", c.Status, c.ScheduledAt)
			}
		})
	}
	// Starting the one with recipients still works.
	if code := call(t, hs, "POST", "/v1/campaigns/"+full+"/start", nil, nil, nil); code != 202 {
		t.Fatalf("start with recipients: %d", code)
	}
}
