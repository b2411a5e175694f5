package inbound_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/bounce"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/smtpsink"
)

// TestServeReturnPathPerDelivery: serve with BOUNCE_DOMAIN sends each
// notice from its own return path, with DSN parameters where the relay
// offers DSN; the receiver inside serve (INBOUND_URL) turns a DSN to it
// into bounced and a suppression; a resend (to a corrected address) leaves
// from a return path naming delivery 1, not the first delivery's.
func TestServeReturnPathPerDelivery(t *testing.T) {
	sink, err := smtpsink.Start(smtpsink.Options{Keep: true, DSN: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	_, redisURL := testenv.Redis(t, testenv.DBInbound)
	const secret = "serve-secret-0123456789"
	cfg := testenv.Config(t, map[string]string{
		"REDIS_URL": redisURL, "OSHIRASE_API_KEYS": teststack.APIKeys, "LISTEN_ADDR": "127.0.0.1:0", "SMTP_URL": sink.URL(),
		"BOUNCE_DOMAIN": domain, "BOUNCE_SECRET": secret, "INBOUND_URL": "lmtp://127.0.0.1:0", "KEY_PREFIX": "rs",
	})
	st := teststack.StartStack(t, cfg, service.Options{API: true, Worker: true})
	codec, _ := bounce.New(domain, secret)

	var c notice.Campaign
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), &c); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	ctx := context.Background()
	added, err := st.Svc.Store.AddRecipients(ctx, c.ID, []notice.Recipient{{Email: "taro@dest.test", Locale: "ja"}})
	if err != nil {
		t.Fatal(err)
	}
	rid := added.IDs[0]
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/start", "", nil, nil); code != 202 {
		t.Fatalf("start: %d %s", code, body)
	}
	teststack.WaitCampaign(t, st.Base, c.ID, 30*time.Second, func(c *notice.Campaign) bool { return c.Status == notice.CampaignDone })
	first := sink.Messages()[0]
	ref, tok, err := codec.FromAddress(first.From)
	if err != nil || ref != (bounce.Ref{Campaign: c.ID, Recipient: rid, Delivery: 0}) {
		t.Fatalf("first notice's return path %q: %+v %v", first.From, ref, err)
	}
	if first.Ret != "HDRS" || first.EnvID != tok || first.Notify != "FAILURE,DELAY" || !strings.EqualFold(first.ORcpt, "rfc822;taro@dest.test") {
		t.Errorf("DSN parameters ret=%q envid=%q notify=%q orcpt=%q", first.Ret, first.EnvID, first.Notify, first.ORcpt)
	}

	if err := send(t, st.Svc.Inbound.Addr(), true, first.From, dsn(tok, "failed", "5.1.1", tok)); err != nil {
		t.Fatalf("DSN to serve's receiver: %v", err)
	}
	var r notice.Recipient
	path := fmt.Sprintf("/v1/campaigns/%s/recipients/%d", c.ID, rid)
	if code, body := teststack.Do(t, st.Base, teststack.SupportKey, "GET", path, "", nil, &r); code != 200 || r.Status != notice.StatusBounced || len(r.Returned) != 1 {
		t.Fatalf("after the DSN: %d %s", code, body)
	}
	if _, err := st.Svc.Store.Suppression(ctx, "taro@dest.test"); err != nil {
		t.Errorf("not suppressed: %v", err)
	}

	if code, body := teststack.Do(t, st.Base, teststack.SupportKey, "POST", path+"/resend", "application/json",
		[]byte(`{"reason":"customer called","email":"taro.new@dest.test"}`), nil); code != 202 {
		t.Fatalf("resend: %d %s", code, body)
	}
	teststack.Eventually(t, "the resend at the relay", 15*time.Second, func() bool { return sink.Count() == 2 })
	second := sink.Messages()[1]
	ref2, _, err := codec.FromAddress(second.From)
	if err != nil || ref2 != (bounce.Ref{Campaign: c.ID, Recipient: rid, Delivery: 1}) || second.To[0] != "taro.new@dest.test" {
		t.Errorf("resend's return path %q → %+v %v (to %v), want delivery 1", second.From, ref2, err, second.To)
	}
}
