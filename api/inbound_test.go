package api_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/bounce"
	"github.com/oshirase/oshirase/inbound"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
)

// TestProviderWebhooksArePublicButSigned: in a real `serve`-like process
// the provider webhooks need no API key — a signed SendGrid batch marks
// its recipient bounced, seen through the API — while an unsigned one is
// refused by its signature (401 unverified), an endpoint whose setting is
// empty says so (404), and other methods are 405 (401 without a key, as
// for any path under /v1 that a method does not take).
func TestProviderWebhooksArePublicButSigned(t *testing.T) {
	_, url := testenv.Redis(t, testenv.DBAPI)
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	const domain, secret = "bounces.oshirase.test", "test-secret-0123456789"
	st := teststack.StartStack(t, testenv.Config(t, map[string]string{"REDIS_URL": url, "KEY_PREFIX": "prov",
		"BOUNCE_DOMAIN": domain, "BOUNCE_SECRET": secret, "SENDGRID_WEBHOOK_PUBLIC_KEY": base64.StdEncoding.EncodeToString(der)}),
		service.Options{API: true})
	ctx := context.Background()
	var c notice.Campaign
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), &c); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	if _, err := st.Svc.Store.AddRecipients(ctx, c.ID, []notice.Recipient{{Email: "u1@dest.test", Locale: "ja"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Svc.Store.Start(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Svc.Store.Mark(ctx, c.ID, []int64{1}, []notice.Status{notice.StatusPending}, notice.StatusSent); err != nil {
		t.Fatal(err)
	}
	codec, _ := bounce.New(domain, secret)
	tok, _ := codec.Encode(bounce.Ref{Campaign: c.ID, Recipient: 1})
	body, _ := json.Marshal([]map[string]any{{"email": "u1@dest.test", "event": "bounce", "type": "bounce", "status": "5.1.1",
		"reason": "550 5.1.1 no such user", "timestamp": time.Now().Unix(), inbound.SendGridTokenArg: tok}})
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	sum := sha256.Sum256(append([]byte(ts), body...))
	sig, _ := ecdsa.SignASN1(rand.Reader, k, sum[:])

	do := func(method, path string, b []byte, hdr map[string]string) (int, string) {
		req, _ := http.NewRequest(method, st.Base+path, bytes.NewReader(b))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	for _, s := range []struct {
		name, method, path string
		hdr                map[string]string
		code               int
		says               string
	}{
		{"unsigned", "POST", "/v1/inbound/sendgrid", nil, 401, `"unverified"`},
		{"signed, no API key", "POST", "/v1/inbound/sendgrid", map[string]string{inbound.SendGridTimestampHeader: ts,
			inbound.SendGridSignatureHeader: base64.StdEncoding.EncodeToString(sig)}, 200, `"received":1`},
		{"SES off", "POST", "/v1/inbound/ses", nil, 404, "SES_TOPIC_ARNS"},
		{"GET, with a key", "GET", "/v1/inbound/sendgrid", map[string]string{"Authorization": "Bearer " + teststack.AdminKey}, 405, "POST"},
		{"GET, no key", "GET", "/v1/inbound/sendgrid", nil, 401, `"unauthorized"`},
	} {
		if code, out := do(s.method, s.path, body, s.hdr); code != s.code || !strings.Contains(out, s.says) {
			t.Errorf("%s: %d %s, want %d with %s", s.name, code, out, s.code, s.says)
		}
	}
	var r notice.Recipient
	if code, out := teststack.Do(t, st.Base, teststack.SupportKey, "GET", "/v1/campaigns/"+c.ID+"/recipients/1", "", nil, &r); code != 200 {
		t.Fatalf("recipient: %d %s", code, out)
	}
	if r.Status != notice.StatusBounced || len(r.Returned) != 1 || r.Returned[0].Status != "5.1.1" {
		t.Errorf("recipient after the signed bounce: %s %+v", r.Status, r.Returned)
	}
}
