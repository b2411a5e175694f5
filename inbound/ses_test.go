package inbound_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oshirase/oshirase/inbound"
	"github.com/oshirase/oshirase/notice"
)

const topic = "arn:aws:sns:ap-northeast-1:123456789012:ses-events"

// snsSigner is a throwaway SNS: a CA, a signing certificate it issued,
// served over real TLS, and a record of the subscription confirmations
// it receives.
type snsSigner struct {
	key      *rsa.PrivateKey
	srv      *httptest.Server // serves the certificate and takes confirmations
	certURL  string
	mu       sync.Mutex
	confirms []url.Values
	fetches  int
}

func newSNSSigner(t *testing.T) *snsSigner {
	t.Helper()
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Throwaway Test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "sns.ap-northeast-1.amazonaws.com"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	s := &snsSigner{key: key}
	s.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		switch {
		case r.URL.Path == "/SimpleNotificationService-test.pem":
			s.fetches++
			w.Write(pemCert)
		case r.URL.Query().Get("Action") == "ConfirmSubscription":
			s.confirms = append(s.confirms, r.URL.Query())
			w.Write([]byte(`<ConfirmSubscriptionResponse/>`))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.srv.Close)
	s.certURL = s.srv.URL + "/SimpleNotificationService-test.pem"
	return s
}

// pin accepts this server only: the production pin (SNS's hosts) is
// tested by TestSNSURLPin.
func (s *snsSigner) pin(u *url.URL) bool {
	return u.Scheme == "https" && u.User == nil && u.Host == s.srv.Listener.Addr().String()
}

// sign fills Signature the way AWS documents it, written here from the
// documentation rather than taken from the code under test.
func (s *snsSigner) sign(t *testing.T, m map[string]string) {
	t.Helper()
	fields := []string{"Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"}
	if m["Type"] != "Notification" {
		fields = []string{"Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"}
	}
	var b strings.Builder
	for _, k := range fields {
		if v, ok := m[k]; ok {
			b.WriteString(k + "\n" + v + "\n")
		}
	}
	var sig []byte
	var err error
	if m["SignatureVersion"] == "1" {
		sum := sha1.Sum([]byte(b.String()))
		sig, err = rsa.SignPKCS1v15(rand.Reader, s.key, crypto.SHA1, sum[:])
	} else {
		sum := sha256.Sum256([]byte(b.String()))
		sig, err = rsa.SignPKCS1v15(rand.Reader, s.key, crypto.SHA256, sum[:])
	}
	if err != nil {
		t.Fatal(err)
	}
	m["Signature"] = base64.StdEncoding.EncodeToString(sig)
}

func sesMessage(typ, source, headerTok, body string) string {
	mail := map[string]any{"timestamp": "2026-12-01T12:00:00.000Z", "messageId": "0101-abc", "source": source,
		"destination": []string{"uX@dest.test"}, "commonHeaders": map[string]any{"subject": "notice"}}
	if headerTok != "" {
		mail["headers"] = []map[string]string{{"name": "From", "value": "a@example.jp"}, {"name": "X-Oshirase-Token", "value": headerTok}}
	}
	ev := map[string]any{"notificationType": typ, "mail": mail}
	var part any
	json.Unmarshal([]byte(body), &part)
	switch typ {
	case "Bounce":
		ev["bounce"] = part
	case "Complaint":
		ev["complaint"] = part
	case "Delivery":
		ev["delivery"] = part
	case "DeliveryDelay":
		delete(ev, "notificationType")
		ev["eventType"] = typ
		ev["deliveryDelay"] = part
	}
	b, _ := json.Marshal(ev)
	return string(b)
}

// TestSESWebhook drives POST /v1/inbound/ses over real HTTP with messages
// signed by a throwaway SNS whose certificate is served over real TLS:
// signature versions 1 and 2 are accepted; a bad signature, another topic,
// a stale timestamp, a certificate off the pinned host, an unknown version
// are refused (401) and change nothing; a subscription is confirmed with a
// GET to SubscribeURL; each SES event type ends where it should, once
// however often SNS delivers it; a forged token changes nothing.
func TestSESWebhook(t *testing.T) {
	sns := newSNSSigner(t)
	f := newProvFixture(t, 9, inbound.ProvidersConfig{SESTopicARNs: []string{topic, "arn:aws:sns:us-east-1:123456789012:other"}})
	inbound.SetSNSTransport(f.prov, sns.srv.Client(), sns.pin)
	// An impostor serving the same certificate from another host: only
	// the pin stops it.
	evilHits := 0
	evil := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { evilHits++ }))
	defer evil.Close()

	rp := func(rid int64) string { return "b-" + f.token(t, rid) + "@" + domain }
	now := time.Now().UTC()
	msg := func(version, message string, edit func(m map[string]string)) []byte {
		m := map[string]string{"Type": "Notification", "MessageId": "m-" + version + "-" + message[len(message)-12:], "TopicArn": topic,
			"Message": message, "Timestamp": now.Format("2006-01-02T15:04:05.000Z"), "SignatureVersion": version,
			"SigningCertURL": sns.certURL, "UnsubscribeURL": sns.srv.URL + "/?Action=Unsubscribe"}
		if edit != nil {
			edit(m)
		}
		sns.sign(t, m)
		b, _ := json.Marshal(m)
		return b
	}
	permanent := `{"bounceType":"Permanent","bounceSubType":"General","reportingMTA":"dsn; a27-23.smtp-out.ap-northeast-1.amazonses.com",
		"bouncedRecipients":[{"emailAddress":"u1@dest.test","action":"failed","status":"5.1.1","diagnosticCode":"smtp; 550 5.1.1 <u1@dest.test>: user unknown"}]}`
	bounce1 := msg("1", sesMessage("Bounce", rp(1), "", permanent), nil)
	subscribe := map[string]string{"Type": "SubscriptionConfirmation", "MessageId": "sub-1", "Token": "tok123", "TopicArn": topic,
		"Message": "You have chosen to subscribe…", "SubscribeURL": sns.srv.URL + "/?Action=ConfirmSubscription&TopicArn=" + url.QueryEscape(topic) + "&Token=tok123",
		"Timestamp": now.Format(time.RFC3339), "SignatureVersion": "2", "SigningCertURL": sns.certURL}
	sns.sign(t, subscribe)
	subBody, _ := json.Marshal(subscribe)
	offHostSub := map[string]string{}
	for k, v := range subscribe {
		offHostSub[k] = v
	}
	offHostSub["SubscribeURL"] = evil.URL + "/?Action=ConfirmSubscription&TopicArn=" + url.QueryEscape(topic) + "&Token=tok123"
	sns.sign(t, offHostSub)
	offHostSubBody, _ := json.Marshal(offHostSub)

	steps := []struct {
		name string
		body []byte
		code int
	}{
		{"v1 Bounce Permanent by mail.source", bounce1, 200},
		{"the same notification again", bounce1, 200},
		{"v2 Complaint by the original header", msg("2", sesMessage("Complaint", "notice@example.jp", f.token(t, 2),
			`{"complainedRecipients":[{"emailAddress":"u2@dest.test"}],"complaintFeedbackType":"abuse"}`), nil), 200},
		{"v2 Bounce Transient", msg("2", sesMessage("Bounce", rp(3), "", `{"bounceType":"Transient","bounceSubType":"MailboxFull",
			"bouncedRecipients":[{"emailAddress":"u3@dest.test","action":"failed","status":"4.2.2","diagnosticCode":"smtp; 452 4.2.2 mailbox full"}]}`), nil), 200},
		{"v2 DeliveryDelay (event publishing)", msg("2", sesMessage("DeliveryDelay", rp(4), "", `{"delayType":"TransientCommunicationFailure",
			"delayedRecipients":[{"emailAddress":"u4@dest.test","status":"4.4.1","diagnosticCode":"smtp; 421 4.4.1 try later"}]}`), nil), 200},
		{"v1 Delivery", msg("1", sesMessage("Delivery", rp(5), "", `{"recipients":["u5@dest.test"],"smtpResponse":"250 2.6.0 Message received","reportingMTA":"a8-70.smtp-out.amazonses.com"}`), func(m map[string]string) {
			m["Subject"] = "Amazon SES Email Event Notification" // signed when present
		}), 200},
		{"bad signature: message changed after signing", func() []byte {
			b := msg("2", sesMessage("Bounce", rp(6), "", permanent), nil)
			return []byte(strings.Replace(string(b), "5.1.1", "5.1.2", 1))
		}(), 401},
		{"topic not allowed", msg("2", sesMessage("Bounce", rp(6), "", permanent), func(m map[string]string) {
			m["TopicArn"] = "arn:aws:sns:ap-northeast-1:999999999999:someone-elses"
		}), 401},
		{"stale timestamp", msg("2", sesMessage("Bounce", rp(6), "", permanent), func(m map[string]string) {
			m["Timestamp"] = now.Add(-2 * time.Hour).Format(time.RFC3339)
		}), 401},
		{"signing certificate off the pinned host", msg("2", sesMessage("Bounce", rp(6), "", permanent), func(m map[string]string) {
			m["SigningCertURL"] = evil.URL + "/SimpleNotificationService-test.pem"
		}), 401},
		{"signing certificate over http", msg("2", sesMessage("Bounce", rp(6), "", permanent), func(m map[string]string) {
			m["SigningCertURL"] = strings.Replace(sns.certURL, "https://", "http://", 1)
		}), 401},
		{"unknown signature version", msg("2", sesMessage("Bounce", rp(6), "", permanent), func(m map[string]string) {
			m["SignatureVersion"] = "3"
		}), 401},
		{"forged token, well signed", msg("2", sesMessage("Bounce", "b-"+altered(f.token(t, 7))+"@"+domain, "", permanent), nil), 200},
		{"subscription confirmed", subBody, 200},
		{"subscription with SubscribeURL off the pinned host", offHostSubBody, 401},
		{"not JSON", []byte("Type=Notification"), 400},
		{"too large", []byte(`{"Message":"` + strings.Repeat("x", 3<<20) + `"}`), 413},
	}
	for _, s := range steps {
		code, body := post(t, f.url+"/v1/inbound/ses", s.body, map[string]string{"Content-Type": "text/plain; charset=UTF-8"})
		if code != s.code {
			t.Errorf("%s: %d %s, want %d", s.name, code, body, s.code)
		}
	}

	want := map[int64]state{
		1: {notice.StatusBounced, "bounced", "bounced: 5.1.1 smtp; 550 5.1.1 <u***@dest.test>: user unknown"},
		2: {notice.StatusComplained, "complained", "complained: abuse"},
		3: {notice.StatusBounced, "bounced", ""},
		4: {notice.StatusSent, "delayed", ""},
		5: {notice.StatusSent, "delivered", ""},
		6: {notice.StatusSent, "", ""},
		7: {notice.StatusSent, "", ""},
	}
	for rid, w := range want {
		got := f.state(t, rid)
		if rid == 1 && got.suppressed != "" && got.suppressed != w.suppressed {
			// The mask's exact form is notice.MaskAddresses'; what matters
			// is the status and no address in clear.
			if !strings.HasPrefix(got.suppressed, "bounced: 5.1.1") || strings.Contains(got.suppressed, "u1@dest.test") {
				t.Errorf("recipient 1 suppression reason %q", got.suppressed)
			}
			got.suppressed = w.suppressed
		}
		if got != w {
			t.Errorf("recipient %d: %+v, want %+v", rid, got, w)
		}
	}
	r5, _ := f.st.Recipient(t.Context(), f.cid, 5)
	r1, _ := f.st.Recipient(t.Context(), f.cid, 1)
	if len(r5.Returned) == 0 || len(r1.Returned) == 0 {
		t.Fatal("no evidence kept")
	}
	if ev := r5.Returned[0]; ev.Status != "2.6.0" || ev.ReportingMTA != "a8-70.smtp-out.amazonses.com" {
		t.Errorf("delivery evidence %+v", ev)
	}
	if ev := r1.Returned[0]; ev.ReportingMTA != "a27-23.smtp-out.ap-northeast-1.amazonses.com" || ev.Action != "failed" {
		t.Errorf("bounce evidence %+v", ev)
	}
	if got := strings.Join(f.audit(t), ","); got != "inbound recipient.bounced 3 ses,inbound recipient.complained 2 ses,inbound recipient.bounced 1 ses" {
		t.Errorf("audit log %s", got)
	}
	if um, err := f.st.Unmatched(t.Context()); err != nil || len(um) != 1 || !strings.Contains(um[0], `"why":"bad_token"`) {
		t.Errorf("kept unmatched %v %v, want the forged one", um, err)
	}
	sns.mu.Lock()
	if len(sns.confirms) != 1 || sns.confirms[0].Get("Token") != "tok123" {
		t.Errorf("confirmations received %v, want one with Token tok123", sns.confirms)
	}
	if sns.fetches != 1 {
		t.Errorf("certificate fetched %d times, want once (cached)", sns.fetches)
	}
	sns.mu.Unlock()
	if evilHits != 0 {
		t.Errorf("the off-host server was asked %d times", evilHits)
	}
	f.noAddresses(t)
}

// TestSESWebhookOff: without SES_TOPIC_ARNS the endpoint says it is off.
func TestSESWebhookOff(t *testing.T) {
	f := newProvFixture(t, 1, inbound.ProvidersConfig{})
	code, body := post(t, f.url+"/v1/inbound/ses", []byte(`{}`), nil)
	if code != 404 || !strings.Contains(body, "SES_TOPIC_ARNS") {
		t.Errorf("%d %s, want 404 naming SES_TOPIC_ARNS", code, body)
	}
	code, _ = post(t, f.url+"/v1/inbound/sendgrid", []byte(`[]`), nil)
	if code != 404 {
		t.Errorf("sendgrid off: %d, want 404", code)
	}
	if _, err := inbound.NewProviders(inbound.ProvidersConfig{SESTopicARNs: []string{topic}}); err == nil {
		t.Error("SES_TOPIC_ARNS without a bounce codec accepted")
	}
}

// TestSNSURLPin is the production pin: SNS's own hosts over https, and
// nothing that only looks like them.
func TestSNSURLPin(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"https://sns.us-east-1.amazonaws.com/SimpleNotificationService-a86cb10b4e1f29c941702d737128f7b6.pem", true},
		{"https://sns.ap-northeast-1.amazonaws.com/SimpleNotificationService-1.pem", true},
		{"https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem", true},
		{"https://SNS.US-EAST-1.AMAZONAWS.COM/x.pem", true},
		{"https://sns.us-east-1.amazonaws.com:443/x.pem", true},
		{"https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=1", true},
		{"http://sns.us-east-1.amazonaws.com/x.pem", false},
		{"https://sns.us-east-1.amazonaws.com.evil.com/x.pem", false},
		{"https://sns.us-east-1.amazonaws.com.cn.evil.com/x.pem", false},
		{"https://evil.com/sns.us-east-1.amazonaws.com/x.pem", false},
		{"https://sns.us-east-1.amazonaws.com@evil.com/x.pem", false},
		{"https://evil.com@sns.us-east-1.amazonaws.com/x.pem", false},
		{"https://user:pw@sns.us-east-1.amazonaws.com/x.pem", false},
		{"https://sns.us-east-1.amazonaws.com:8443/x.pem", false},
		{"https://evilsns.us-east-1.amazonaws.com/x.pem", false},
		{"https://sns.x.amazonaws.com/x.pem", false},
		{"https://s3.us-east-1.amazonaws.com/x.pem", false},
		{"https://sns.us-east-1.amazonaws.co/x.pem", false},
		{"https://sns.us_east-1.amazonaws.com/x.pem", false},
		{"https://sns.us-east-1.amazonaws.com./x.pem", false},
		{"https://127.0.0.1/x.pem", false},
		{"https:sns.us-east-1.amazonaws.com/x.pem", false},
		{"//sns.us-east-1.amazonaws.com/x.pem", false},
		{"ftp://sns.us-east-1.amazonaws.com/x.pem", false},
	} {
		u, err := url.Parse(tc.url)
		if err != nil {
			if tc.ok {
				t.Errorf("%s: %v", tc.url, err)
			}
			continue
		}
		if got := inbound.SNSURL(u); got != tc.ok {
			t.Errorf("%s: pinned %v, want %v", tc.url, got, tc.ok)
		}
	}
}
