// Package bounce ties what comes back after the relay (DSNs, complaints,
// auto-replies) to the recipient and delivery it is about. Every notice
// leaves with a per-recipient envelope sender (VERP) b-<token>@BOUNCE_DOMAIN;
// the token names the campaign, the recipient and the delivery (a resend is
// its own) and carries a truncated HMAC, so a forged bounce marks nobody.
package bounce

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Ref is what a token names.
type Ref struct {
	Campaign  string // campaign id: lower-case [a-z0-9], as store makes them
	Recipient int64  // recipient id in the campaign
	Delivery  int    // 0 for the first send, n for the n-th resend
}

// macLen is how many bytes of HMAC-SHA256 a token keeps: 80 bits, so a
// forger guesses right once in 2^80 tries; base32 makes 16 characters.
const macLen = 10

// Codec makes and checks tokens with one secret.
type Codec struct {
	key    []byte
	domain string
}

// ErrToken is wrapped by every refusal of Decode.
var ErrToken = errors.New("bounce token")

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// New returns a Codec for BOUNCE_DOMAIN and BOUNCE_SECRET. The secret must
// be at least 16 bytes: it is all that stands between a forged bounce and a
// customer wrongly listed as unreachable.
func New(domain, secret string) (*Codec, error) {
	domain = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(domain), "."))
	if domain == "" || strings.ContainsAny(domain, "@<> \r\n") || !strings.Contains(domain, ".") {
		return nil, fmt.Errorf("BOUNCE_DOMAIN: %q is not a domain name", domain)
	}
	if len(secret) < 16 {
		return nil, errors.New("BOUNCE_SECRET: set at least 16 characters (it signs every return path)")
	}
	return &Codec{key: []byte(secret), domain: domain}, nil
}

// Domain is BOUNCE_DOMAIN, lower case.
func (c *Codec) Domain() string { return c.domain }

func validCampaign(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !(s[i] >= 'a' && s[i] <= 'z' || s[i] >= '0' && s[i] <= '9') {
			return false
		}
	}
	return true
}

func (c *Codec) mac(body string) string {
	h := hmac.New(sha256.New, c.key)
	h.Write([]byte(body))
	return strings.ToLower(b32.EncodeToString(h.Sum(nil)[:macLen]))
}

// Encode returns the token for r: campaign-recipient-delivery-mac, numbers
// in base 36, lower-case [a-z0-9-] only (a local part every MTA keeps as it
// is, and case-folding ones cannot break).
func (c *Codec) Encode(r Ref) (string, error) {
	if !validCampaign(r.Campaign) || r.Recipient < 0 || r.Delivery < 0 {
		return "", fmt.Errorf("%w: cannot name campaign %q recipient %d delivery %d", ErrToken, r.Campaign, r.Recipient, r.Delivery)
	}
	body := r.Campaign + "-" + strconv.FormatInt(r.Recipient, 36) + "-" + strconv.FormatInt(int64(r.Delivery), 36)
	return body + "-" + c.mac(body), nil
}

// ReturnPath is the envelope sender for r: b-<token>@BOUNCE_DOMAIN.
func (c *Codec) ReturnPath(r Ref) (addr, token string, err error) {
	t, err := c.Encode(r)
	if err != nil {
		return "", "", err
	}
	return "b-" + t + "@" + c.domain, t, nil
}

// Decode checks a token and returns what it names. Case is ignored (some
// MTAs upper-case local parts); anything else that differs is refused.
func (c *Codec) Decode(token string) (Ref, error) {
	token = strings.ToLower(strings.TrimSpace(token))
	parts := strings.Split(token, "-")
	if len(parts) != 4 {
		return Ref{}, fmt.Errorf("%w: not campaign-recipient-delivery-mac", ErrToken)
	}
	body := strings.Join(parts[:3], "-")
	if !hmac.Equal([]byte(c.mac(body)), []byte(parts[3])) {
		return Ref{}, fmt.Errorf("%w: signature does not match (forged, altered or another BOUNCE_SECRET)", ErrToken)
	}
	rid, err1 := strconv.ParseInt(parts[1], 36, 64)
	del, err2 := strconv.ParseInt(parts[2], 36, 32)
	if !validCampaign(parts[0]) || err1 != nil || err2 != nil || rid < 0 || del < 0 {
		return Ref{}, fmt.Errorf("%w: malformed fields", ErrToken)
	}
	return Ref{Campaign: parts[0], Recipient: rid, Delivery: int(del)}, nil
}

// FromAddress takes the token out of a return-path address
// b-<token>@BOUNCE_DOMAIN (any case) and decodes it. An address at another
// domain, or without the b- prefix, is refused.
func (c *Codec) FromAddress(addr string) (Ref, string, error) {
	addr = strings.ToLower(strings.Trim(strings.TrimSpace(addr), "<>"))
	at := strings.LastIndexByte(addr, '@')
	if at < 0 || addr[at+1:] != c.domain {
		return Ref{}, "", fmt.Errorf("%w: not an address at the bounce domain", ErrToken)
	}
	local, ok := strings.CutPrefix(addr[:at], "b-")
	if !ok {
		return Ref{}, "", fmt.Errorf("%w: local part does not start with b-", ErrToken)
	}
	r, err := c.Decode(local)
	return r, local, err
}

// InDomain reports whether addr is at BOUNCE_DOMAIN.
func (c *Codec) InDomain(addr string) bool {
	addr = strings.ToLower(strings.Trim(strings.TrimSpace(addr), "<>"))
	at := strings.LastIndexByte(addr, '@')
	return at >= 0 && addr[at+1:] == c.domain
}

// XText encodes s as RFC 3461 xtext, for ORCPT and ENVID: '+', '=' and
// anything outside printable ASCII become +HH.
func XText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch < 33 || ch > 126 || ch == '+' || ch == '=' {
			fmt.Fprintf(&b, "+%02X", ch)
			continue
		}
		b.WriteByte(ch)
	}
	return b.String()
}

// UnXText decodes RFC 3461 xtext; a malformed +HH is kept as it is.
func UnXText(s string) string {
	if !strings.Contains(s, "+") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '+' && i+2 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(n))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
