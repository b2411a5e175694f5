package inbound_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/inbound"
	"github.com/oshirase/oshirase/notice"
)

func sendGridKey(t *testing.T) (*ecdsa.PrivateKey, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return k, base64.StdEncoding.EncodeToString(der)
}

// sgHeaders signs body as SendGrid does: ECDSA P-256 over SHA-256 of the
// timestamp header followed by the body, base64 of the ASN.1 signature.
func sgHeaders(t *testing.T, k *ecdsa.PrivateKey, at time.Time, body []byte) map[string]string {
	t.Helper()
	ts := strconv.FormatInt(at.Unix(), 10)
	sum := sha256.Sum256(append([]byte(ts), body...))
	sig, err := ecdsa.SignASN1(rand.Reader, k, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{"Content-Type": "application/json", inbound.SendGridTimestampHeader: ts,
		inbound.SendGridSignatureHeader: base64.StdEncoding.EncodeToString(sig)}
}

// TestSendGridWebhook drives POST /v1/inbound/sendgrid over real HTTP
// with batches signed by a throwaway P-256 key: each event type ends where
// it should, once however often the batch comes; a wrong key, a body
// changed after signing, an old timestamp or no signature are refused
// (401) and change nothing.
func TestSendGridWebhook(t *testing.T) {
	k, pub := sendGridKey(t)
	f := newProvFixture(t, 9, inbound.ProvidersConfig{SendGridKey: pub})
	ev := func(rid int64, event string, extra map[string]any) map[string]any {
		m := map[string]any{"email": "u" + strconv.FormatInt(rid, 10) + "@dest.test", "timestamp": time.Now().Unix(), "event": event,
			"smtp-id": "<m" + strconv.FormatInt(rid, 10) + "@example.jp>", "sg_event_id": "e-" + event + strconv.FormatInt(rid, 10),
			"sg_message_id": "sg.1", inbound.SendGridTokenArg: f.token(t, rid)}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	batch := func(evs ...map[string]any) []byte {
		b, _ := json.Marshal(evs)
		return b
	}
	good := batch(
		ev(1, "processed", nil),
		ev(1, "bounce", map[string]any{"type": "bounce", "status": "5.0.0", "reason": "550 5.1.1 The email account that you tried to reach does not exist"}),
		ev(2, "bounce", map[string]any{"type": "blocked", "status": "5.0.0", "reason": "550 5.7.1 blocked by policy"}),
		ev(3, "dropped", map[string]any{"reason": "Invalid"}),
		ev(4, "spamreport", nil),
		ev(5, "deferred", map[string]any{"response": "421 4.7.0 try again later", "attempt": "1"}),
		ev(5, "delivered", map[string]any{"response": "250 2.0.0 OK"}),
		ev(6, "open", nil),
		map[string]any{"email": "other@dest.test", "event": "bounce", "type": "bounce", "status": "5.1.1"}, // another sender's mail
		ev(7, "bounce", map[string]any{"type": "bounce", "status": "5.1.1", inbound.SendGridTokenArg: altered(f.token(t, 7))}),
	)
	other, _ := sendGridKey(t)
	evil := batch(ev(8, "spamreport", nil))
	now := time.Now()
	changed := sgHeaders(t, k, now, evil)
	steps := []struct {
		name string
		body []byte
		hdr  map[string]string
		code int
	}{
		{"signed batch", good, sgHeaders(t, k, now, good), 200},
		{"the same batch again, signed afresh", good, sgHeaders(t, k, now.Add(time.Second), good), 200},
		{"signed with another key", evil, sgHeaders(t, other, now, evil), 401},
		{"body changed after signing", batch(ev(9, "spamreport", nil)), changed, 401},
		{"timestamp 11 minutes old", evil, sgHeaders(t, k, now.Add(-11*time.Minute), evil), 401},
		{"timestamp 11 minutes ahead", evil, sgHeaders(t, k, now.Add(11*time.Minute), evil), 401},
		{"no signature", evil, map[string]string{"Content-Type": "application/json"}, 401},
		{"signed, not an array", []byte(`{"event":"bounce"}`), sgHeaders(t, k, now, []byte(`{"event":"bounce"}`)), 400},
	}
	for _, s := range steps {
		if code, body := post(t, f.url+"/v1/inbound/sendgrid", s.body, s.hdr); code != s.code {
			t.Errorf("%s: %d %s, want %d", s.name, code, body, s.code)
		}
	}
	want := map[int64]state{
		2: {notice.StatusBounced, "bounced", ""},
		3: {notice.StatusBounced, "bounced", "bounced: dropped by SendGrid: Invalid"},
		4: {notice.StatusComplained, "complained", "complained: abuse"},
		5: {notice.StatusSent, "delayed,delivered", ""},
		6: {notice.StatusSent, "", ""},
		7: {notice.StatusSent, "", ""},
		8: {notice.StatusSent, "", ""},
		9: {notice.StatusSent, "", ""},
	}
	for rid, w := range want {
		if got := f.state(t, rid); got != w {
			t.Errorf("recipient %d: %+v, want %+v", rid, got, w)
		}
	}
	// SendGrid said 5.0.0; the reply it quotes says 5.1.1: a bad address.
	if got := f.state(t, 1); got.status != notice.StatusBounced || got.kinds != "bounced" || !strings.HasPrefix(got.suppressed, "bounced: 5.1.1 550 5.1.1") {
		t.Errorf("recipient 1: %+v, want bounced and suppressed as 5.1.1", got)
	}
	if got := strings.Join(f.audit(t), ","); got != "inbound recipient.complained 4 sendgrid,inbound recipient.bounced 3 sendgrid,inbound recipient.bounced 2 sendgrid,inbound recipient.bounced 1 sendgrid" {
		t.Errorf("audit log %s", got)
	}
	// The forged token's event, kept aside each time it came (as the mail
	// receiver keeps each copy); the token-less one is not ours: not kept.
	if um, err := f.st.Unmatched(t.Context()); err != nil || len(um) != 2 || !strings.Contains(um[0], `"why":"bad_token"`) || !strings.Contains(um[1], `"why":"bad_token"`) {
		t.Errorf("kept unmatched %d %v, want the forged one, twice", len(um), err)
	}
	f.noAddresses(t)
}

// TestSendGridKeySetting: the key is taken as SendGrid shows it (base64
// DER) or as PEM; anything else — not base64, not a key, a P-384 key —
// is refused at start with what is wrong.
func TestSendGridKeySetting(t *testing.T) {
	_, pub := sendGridKey(t)
	der, _ := base64.StdEncoding.DecodeString(pub)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der384, _ := x509.MarshalPKIXPublicKey(&p384.PublicKey)
	for _, tc := range []struct {
		key, err string
	}{
		{pub, ""},
		{"-----BEGIN PUBLIC KEY-----\n" + pub + "\n-----END PUBLIC KEY-----\n", ""},
		{"not base64!", "not base64"},
		{base64.StdEncoding.EncodeToString(der[:20]), "not a DER public key"},
		{base64.StdEncoding.EncodeToString(der384), "not an ECDSA P-256 public key"},
	} {
		_, err := inbound.ParseSendGridKey(tc.key)
		if (tc.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%.30q: %v, want %q", tc.key, err, tc.err)
		}
	}
}
