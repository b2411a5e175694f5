package app_test

import (
	"context"
	"strings"
	"testing"

	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

// TestPreview: previews without HTTP — their refusals by Kind and Code, a
// rendered notice, and the audit entry of a real recipient's preview.
func TestPreview(t *testing.T) {
	f := newFixture(t, app.Limits{})
	ctx := context.Background()
	for _, tc := range []struct {
		name, tmpl string
		req        app.PreviewRequest
		kind       app.Kind
		code       string
	}{
		{"no such template", "nosuch", app.PreviewRequest{}, app.NotFound, "not_found"},
		{"bad locale", "card-reissue", app.PreviewRequest{Locale: "fr"}, app.BadRequest, "invalid"},
		{"bad charset", "card-reissue", app.PreviewRequest{Charset: "latin1"}, app.BadRequest, "invalid"},
		{"card number in the data", "card-reissue", app.PreviewRequest{Data: map[string]any{"cause": "4111-1111-1111-1111"}}, app.Invalid, "invalid"},
		{"data missing what the notice must state", "card-reissue", app.PreviewRequest{Data: map[string]any{"company": "x"}}, app.Invalid, "invalid_data"},
	} {
		_, err := f.app.PreviewTemplate(ctx, tc.tmpl, tc.req)
		wantErr(t, tc.name, err, tc.kind, tc.code)
	}
	p, err := f.app.PreviewTemplate(ctx, "card-reissue", app.PreviewRequest{Locale: "en"})
	if err != nil || p.Subject == "" || p.Recipient != "sample" || !p.CharsetOK {
		t.Fatalf("sample preview: %+v %v", p, err)
	}

	c, ids := f.draft(t, ctx, notice.Recipient{Email: "yamada@example.jp", Name: "山田太郎", Locale: "ja"})
	p, err = f.app.PreviewCampaign(ctx, c.ID, "", ids[0])
	if err != nil || p.Locale != "ja" || p.Recipient != "1" || !strings.Contains(p.Text, "山田太郎") {
		t.Fatalf("recipient preview: %+v %v", p, err)
	}
	entries, _, err := f.store.AuditLog(ctx, store.AuditQuery{CampaignID: c.ID})
	if err != nil || len(entries) == 0 || entries[0].Action != "campaign.preview" || entries[0].Recipient != ids[0] {
		t.Errorf("a recipient's preview is not audited: %+v %v", entries, err)
	}
	_, err = f.app.PreviewCampaign(ctx, c.ID, "fr", 0)
	wantErr(t, "campaign preview in an unknown locale", err, app.BadRequest, "invalid")
	_, err = f.app.PreviewCampaign(ctx, c.ID, "", 99)
	wantErr(t, "no such recipient", err, app.NotFound, "not_found")
}
