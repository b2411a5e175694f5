package app

import (
	"cmp"
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/oshirase/oshirase/ingest"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

// Suppress puts email on the suppression list: nothing is sent to it
// unless a resend or a single notice overrides the list. reason is
// required; the audit entry names the address masked. It returns the entry
// with the address as it is kept (and listed, and matched).
func (a *App) Suppress(ctx context.Context, email, reason string) (*store.Suppression, error) {
	// Every bad field is named at once: one details entry each.
	var bad []FieldError
	code, msg := "", ""
	rc := notice.Recipient{Email: email}
	if rej := ingest.Validate(&rc); rej != nil && rej.Field == "email" {
		bad = append(bad, FieldError{"email", rej.Error})
		code, msg = "invalid_email", rej.Error
	}
	if strings.TrimSpace(reason) == "" {
		bad = append(bad, FieldError{"reason", "required"})
		code, msg = cmp.Or(code, "reason_required"), cmp.Or(msg, "a reason is required")
	} else if fe := a.CardInText(ctx, "reason", reason); fe != nil {
		bad = append(bad, fe...)
		code, msg = cmp.Or(code, "invalid_reason"), cmp.Or(msg, "the reason looks like it holds a full card number")
	}
	if len(bad) > 1 {
		code, msg = "invalid", "the suppression has invalid fields"
	}
	if len(bad) > 0 {
		return nil, E(Invalid, code, msg, bad...)
	}
	sup := store.Suppression{Email: store.EmailKey(rc.Email), Reason: reason, At: time.Now().UTC(), Actor: actorName(ctx)}
	if err := a.store.Suppress(ctx, sup); err != nil {
		return nil, err
	}
	a.Audit(ctx, store.AuditEntry{Action: "suppression.add", Reason: reason, Details: maskedDetails(sup.Email)})
	return &sup, nil
}

// Unsuppress takes email off the suppression list. Sending to an address
// that bounced, or that asked not to be written to, is a decision someone
// must own: the reason is required and the audit log keeps it. An address
// not on the list is NotFound.
func (a *App) Unsuppress(ctx context.Context, email, reason string) error {
	addr := store.EmailKey(LookupForm(email))
	reason = strings.TrimSpace(reason)
	if reason == "" {
		// The API takes the reason from the query: the message says where.
		return E(Invalid, "reason_required", "a reason is required (?reason=…)", FieldError{"reason", "required"})
	}
	if fe := a.CardInText(ctx, "reason", reason); fe != nil {
		return E(Invalid, "invalid_reason", "the reason looks like it holds a full card number", fe...)
	}
	ok, err := a.store.Unsuppress(ctx, addr)
	if err != nil {
		return err
	}
	if !ok {
		return E(NotFound, "not_found", "that address is not suppressed")
	}
	a.Audit(ctx, store.AuditEntry{Action: "suppression.remove", Reason: reason, Details: maskedDetails(addr)})
	return nil
}

// maskedDetails records which address an action touched, masked: the audit
// log is read by more people than the recipient list.
func maskedDetails(addr string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"email": notice.MaskEmail(addr)})
	return b
}
