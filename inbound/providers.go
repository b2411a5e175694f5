package inbound

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/oshirase/oshirase/bounce"
	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/webhooks"
)

// ProvidersConfig configures the provider webhooks: Amazon SES events
// through SNS (POST /v1/inbound/ses) and SendGrid's signed event webhook
// (POST /v1/inbound/sendgrid). Both are public endpoints: a request is
// authenticated by its signature, not by an API key.
type ProvidersConfig struct {
	// Codec checks the bounce token that ties an event to its notice
	// (BOUNCE_DOMAIN, BOUNCE_SECRET); required when either endpoint is on.
	Codec  *bounce.Codec
	Store  *store.Store
	Log    *slog.Logger
	Now    func() time.Time
	Events *webhooks.Emitter
	// SESTopicARNs (SES_TOPIC_ARNS) are the SNS topics whose messages are
	// taken; empty: /v1/inbound/ses is off (404).
	SESTopicARNs []string
	// SendGridKey (SENDGRID_WEBHOOK_PUBLIC_KEY) is the event webhook's
	// verification key as SendGrid shows it (base64 of the DER public key,
	// PEM also taken); empty: /v1/inbound/sendgrid is off (404).
	SendGridKey string
}

// Providers serves the provider webhooks.
type Providers struct {
	rec   recorder
	codec *bounce.Codec
	log   *slog.Logger
	now   func() time.Time
	sns   *snsVerifier     // nil: SES off
	sg    *ecdsa.PublicKey // nil: SendGrid off
}

// providerMaxBytes bounds a request: an SNS message carries at most
// 256 KB (JSON escaping may nearly double it); SendGrid posts batches of
// up to 768 KB.
const providerMaxBytes = 2 << 20

// NewProviders checks the settings and returns the handlers' owner.
func NewProviders(cfg ProvidersConfig) (*Providers, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	p := &Providers{rec: recorder{store: cfg.Store, log: cfg.Log, now: cfg.Now, events: cfg.Events},
		codec: cfg.Codec, log: cfg.Log, now: cfg.Now}
	if len(cfg.SESTopicARNs) > 0 {
		if cfg.Codec == nil {
			return nil, errors.New("SES_TOPIC_ARNS is set: BOUNCE_DOMAIN and BOUNCE_SECRET are required too (SES events are tied to notices by the signed return-path token)")
		}
		p.sns = newSNSVerifier(cfg.SESTopicARNs, cfg.Now)
	}
	if cfg.SendGridKey != "" {
		if cfg.Codec == nil {
			return nil, errors.New("SENDGRID_WEBHOOK_PUBLIC_KEY is set: BOUNCE_DOMAIN and BOUNCE_SECRET are required too (SendGrid events are tied to notices by the signed token)")
		}
		k, err := ParseSendGridKey(cfg.SendGridKey)
		if err != nil {
			return nil, fmt.Errorf("SENDGRID_WEBHOOK_PUBLIC_KEY: %w", err)
		}
		p.sg = k
	}
	return p, nil
}

// ParseSendGridKey reads the event webhook's verification key: base64 of
// a DER SubjectPublicKeyInfo (what SendGrid's settings page shows), or the
// same as PEM. It must be an ECDSA P-256 key.
func ParseSendGridKey(s string) (*ecdsa.PublicKey, error) {
	s = strings.TrimSpace(s)
	var der []byte
	if block, _ := pem.Decode([]byte(s)); block != nil {
		der = block.Bytes
	} else {
		b, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
		if err != nil {
			return nil, fmt.Errorf("not base64 (copy the key as SendGrid shows it): %w", err)
		}
		der = b
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("not a DER public key: %w", err)
	}
	ek, ok := k.(*ecdsa.PublicKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, errors.New("not an ECDSA P-256 public key")
	}
	return ek, nil
}

// writeError answers as the API does: {"error":{"code","message"}}.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// readBody reads a provider's request, or answers it (405, 404 when the
// endpoint is off, 413) and returns false.
func (p *Providers) readBody(w http.ResponseWriter, r *http.Request, on bool, name, setting string) ([]byte, bool) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+r.URL.Path+"; allowed: POST")
		return nil, false
	}
	if !on {
		writeError(w, http.StatusNotFound, "not_enabled", name+" events are off on this server: set "+setting+" (with BOUNCE_DOMAIN and BOUNCE_SECRET) to take them")
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, providerMaxBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("request body is over %d bytes", providerMaxBytes))
			return nil, false
		}
		writeError(w, http.StatusBadRequest, "bad_request", "cannot read the request body")
		return nil, false
	}
	return body, true
}

// refuse answers a request that failed verification: 401, logged, nothing
// changed. why never holds an address.
func (p *Providers) refuse(w http.ResponseWriter, r *http.Request, via string, why error) {
	metrics.Returned.WithLabelValues("unknown", "unverified").Inc()
	// The reason may quote what the sender chose (a URL, a topic): masked,
	// so an address put there is not logged in clear.
	msg := notice.MaskAddresses(why.Error())
	p.log.Warn("provider webhook refused: not verified, nothing changed", "via", via, "remote", r.RemoteAddr, "reason", msg)
	writeError(w, http.StatusUnauthorized, "unverified", msg)
}

// providerEvent is one provider event mapped to what we record.
type providerEvent struct {
	rep  *bounce.Report
	hard bool
	raw  []byte // kept as the returned message; nil: not kept (deliveries)
}

// take records one verified provider event whose token (maybe empty) was
// found at how. No token: counted and logged (a provider account may carry
// other mail than ours). A token that fails its HMAC: counted, logged and
// kept aside, nothing changed. It fails only when storage did.
func (p *Providers) take(ctx context.Context, via, token, how string, ev providerEvent) error {
	kind := string(ev.rep.Kind)
	if token == "" {
		metrics.Returned.WithLabelValues(kind, "no_token").Inc()
		p.log.Info("provider event names no notice of ours: ignored", "via", via, "kind", kind)
		return nil
	}
	ref, err := p.codec.Decode(token)
	if err != nil {
		raw := ev.raw
		if raw == nil {
			raw = []byte{}
		}
		return p.rec.unmatched(ctx, kind, "bad_token", how, raw, err, "via", via)
	}
	return p.rec.record(ctx, outcome{ref: ref, how: how, rep: ev.rep, hard: ev.hard, raw: ev.raw, via: via})
}

// enhancedCode finds an RFC 3463 status code in a reply text.
var enhancedCode = regexp.MustCompile(`\b([245]\.\d{1,3}\.\d{1,3})\b`)

func codeIn(s string) string {
	if m := enhancedCode.FindStringSubmatch(s); m != nil {
		return m[1]
	}
	return ""
}
