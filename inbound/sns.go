package inbound

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Amazon SNS message verification, by hand after AWS's "Verifying the
// signatures of Amazon SNS messages": aws-sdk-go-v2 has no verifier, and
// no maintained Go library checks all of signature versions 1 and 2, the
// certificate URL's host, the topic and the timestamp. The parts are
// crypto/x509 and crypto/rsa from the standard library.

// snsMessage is what SNS POSTs to an HTTP(S) subscriber.
type snsMessage struct {
	Type             string  `json:"Type"`
	MessageID        string  `json:"MessageId"`
	Token            string  `json:"Token"`
	TopicArn         string  `json:"TopicArn"`
	Subject          *string `json:"Subject"` // signed only when present
	Message          string  `json:"Message"`
	Timestamp        string  `json:"Timestamp"`
	SignatureVersion string  `json:"SignatureVersion"`
	Signature        string  `json:"Signature"`
	SigningCertURL   string  `json:"SigningCertURL"`
	SubscribeURL     string  `json:"SubscribeURL"`
	UnsubscribeURL   string  `json:"UnsubscribeURL"`
}

// The SNS message types.
const (
	snsNotification   = "Notification"
	snsSubscribe      = "SubscriptionConfirmation"
	snsUnsubscribeAck = "UnsubscribeConfirmation"
)

// stringToSign is the canonical text SNS signs: "Key\nvalue\n" for each
// field in this order, Subject only when the message has one.
func (m *snsMessage) stringToSign() (string, error) {
	var kv [][2]string
	switch m.Type {
	case snsNotification:
		kv = append(kv, [2]string{"Message", m.Message}, [2]string{"MessageId", m.MessageID})
		if m.Subject != nil {
			kv = append(kv, [2]string{"Subject", *m.Subject})
		}
		kv = append(kv, [2]string{"Timestamp", m.Timestamp}, [2]string{"TopicArn", m.TopicArn}, [2]string{"Type", m.Type})
	case snsSubscribe, snsUnsubscribeAck:
		kv = [][2]string{{"Message", m.Message}, {"MessageId", m.MessageID}, {"SubscribeURL", m.SubscribeURL},
			{"Timestamp", m.Timestamp}, {"Token", m.Token}, {"TopicArn", m.TopicArn}, {"Type", m.Type}}
	default:
		return "", fmt.Errorf("Type %q is not Notification, SubscriptionConfirmation or UnsubscribeConfirmation", m.Type)
	}
	var b strings.Builder
	for _, p := range kv {
		b.WriteString(p[0])
		b.WriteByte('\n')
		b.WriteString(p[1])
		b.WriteByte('\n')
	}
	return b.String(), nil
}

// snsHost is the host pattern the AWS SDKs accept for SNS's signing
// certificates: sns.<region>.amazonaws.com, and .com.cn in China.
var snsHost = regexp.MustCompile(`^sns\.[a-z0-9-]{3,}\.amazonaws\.com(\.cn)?$`)

// snsURL reports whether u is an https URL on one of SNS's hosts, with no
// user info and no port but 443: the only places a signing certificate is
// fetched from and a subscription confirmed at. Anything else — http, a
// look-alike such as sns.us-east-1.amazonaws.com.evil.com, user info in
// front of a real host — is refused before any request is made.
func snsURL(u *url.URL) bool {
	if u.Scheme != "https" || u.User != nil || u.Opaque != "" {
		return false
	}
	if p := u.Port(); p != "" && p != "443" {
		return false
	}
	return snsHost.MatchString(strings.ToLower(u.Hostname()))
}

// snsVerifier checks SNS messages: topic, timestamp, certificate URL and
// signature. Certificates are fetched once per URL and kept while valid.
type snsVerifier struct {
	topics map[string]bool
	maxAge time.Duration
	now    func() time.Time
	// pin and client are replaced only by tests (export_test.go), to fetch
	// a throwaway certificate from a loopback TLS server; in production
	// pin is snsURL and client verifies TLS against the system's roots.
	pin    func(*url.URL) bool
	client *http.Client

	mu    sync.Mutex
	certs map[string]*x509.Certificate
}

// snsMaxAge is how old a message may be: SNS's default delivery policy
// retries for about a minute, so an hour leaves room for a custom one
// while a captured message cannot be replayed for ever.
const snsMaxAge = time.Hour

// snsSkew is how far in the future a Timestamp may be (clocks differ).
const snsSkew = 5 * time.Minute

// certMaxBytes bounds a fetched certificate (SNS's are about 2 KB).
const certMaxBytes = 64 << 10

// certCacheMax bounds the cache: SNS uses a few certificates per region.
const certCacheMax = 64

func newSNSVerifier(topics []string, now func() time.Time) *snsVerifier {
	v := &snsVerifier{topics: map[string]bool{}, maxAge: snsMaxAge, now: now, pin: snsURL, certs: map[string]*x509.Certificate{}}
	for _, t := range topics {
		if t = strings.TrimSpace(t); t != "" {
			v.topics[t] = true
		}
	}
	v.client = &http.Client{
		Timeout: 10 * time.Second,
		// A redirect could lead off SNS's hosts: not followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return v
}

// errUnverified wraps every reason a message is refused as not SNS's.
var errUnverified = errors.New("not a verified SNS message")

// verify checks m. The cheap checks (topic, timestamp, URL) come first,
// so a forged message never makes us fetch anything.
func (v *snsVerifier) verify(ctx context.Context, m *snsMessage) error {
	if !v.topics[m.TopicArn] {
		return fmt.Errorf("%w: TopicArn %q is not in SES_TOPIC_ARNS", errUnverified, m.TopicArn)
	}
	ts, err := time.Parse(time.RFC3339Nano, m.Timestamp)
	if err != nil {
		return fmt.Errorf("%w: Timestamp %q is not an ISO 8601 time", errUnverified, m.Timestamp)
	}
	if age := v.now().Sub(ts); age > v.maxAge || age < -snsSkew {
		return fmt.Errorf("%w: Timestamp %s is %s old, outside the %s accepted", errUnverified, m.Timestamp, age.Round(time.Second), v.maxAge)
	}
	var h crypto.Hash
	switch m.SignatureVersion {
	case "1":
		h = crypto.SHA1
	case "2":
		h = crypto.SHA256
	default:
		return fmt.Errorf("%w: SignatureVersion %q is not 1 or 2", errUnverified, m.SignatureVersion)
	}
	sig, err := base64.StdEncoding.DecodeString(m.Signature)
	if err != nil || len(sig) == 0 {
		return fmt.Errorf("%w: Signature is not base64", errUnverified)
	}
	text, err := m.stringToSign()
	if err != nil {
		return fmt.Errorf("%w: %v", errUnverified, err)
	}
	cert, err := v.cert(ctx, m.SigningCertURL)
	if err != nil {
		return err
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("%w: signing certificate has no RSA key", errUnverified)
	}
	var sum []byte
	if h == crypto.SHA1 {
		s := sha1.Sum([]byte(text))
		sum = s[:]
	} else {
		s := sha256.Sum256([]byte(text))
		sum = s[:]
	}
	if err := rsa.VerifyPKCS1v15(pub, h, sum, sig); err != nil {
		return fmt.Errorf("%w: signature (version %s) does not match", errUnverified, m.SignatureVersion)
	}
	return nil
}

// cert returns the certificate at raw, an SNS signing certificate URL,
// fetched over verified TLS from a pinned host, or from the cache.
func (v *snsVerifier) cert(ctx context.Context, raw string) (*x509.Certificate, error) {
	u, err := url.Parse(raw)
	if err != nil || !v.pin(u) || !strings.HasSuffix(u.Path, ".pem") {
		return nil, fmt.Errorf("%w: SigningCertURL %q is not an https .pem URL on an SNS host (sns.<region>.amazonaws.com)", errUnverified, raw)
	}
	now := v.now()
	v.mu.Lock()
	c := v.certs[raw]
	v.mu.Unlock()
	if c != nil && now.Before(c.NotAfter) {
		return c, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch SNS signing certificate: %w", err)
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch SNS signing certificate: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch SNS signing certificate: %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, certMaxBytes))
	if err != nil {
		return nil, fmt.Errorf("fetch SNS signing certificate: %w", err)
	}
	block, _ := pem.Decode(body)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%w: SigningCertURL did not give a PEM certificate", errUnverified)
	}
	if c, err = x509.ParseCertificate(block.Bytes); err != nil {
		return nil, fmt.Errorf("%w: signing certificate: %v", errUnverified, err)
	}
	if now.Before(c.NotBefore) || now.After(c.NotAfter) {
		return nil, fmt.Errorf("%w: signing certificate is not valid now (%s to %s)", errUnverified, c.NotBefore, c.NotAfter)
	}
	v.mu.Lock()
	if len(v.certs) >= certCacheMax {
		clear(v.certs)
	}
	v.certs[raw] = c
	v.mu.Unlock()
	return c, nil
}

// confirm confirms a verified SubscriptionConfirmation by GETting its
// SubscribeURL, which must be on an SNS host and ask to confirm this
// topic's subscription.
func (v *snsVerifier) confirm(ctx context.Context, m *snsMessage) error {
	u, err := url.Parse(m.SubscribeURL)
	if err != nil || !v.pin(u) {
		return fmt.Errorf("%w: SubscribeURL is not an https URL on an SNS host", errUnverified)
	}
	if q := u.Query(); q.Get("Action") != "ConfirmSubscription" || q.Get("TopicArn") != m.TopicArn {
		return fmt.Errorf("%w: SubscribeURL does not confirm a subscription to %s", errUnverified, m.TopicArn)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("confirm SNS subscription: %w", err)
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return fmt.Errorf("confirm SNS subscription: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("confirm SNS subscription: SNS answered %s", resp.Status)
	}
	return nil
}
