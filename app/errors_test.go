package app

import (
	"errors"
	"fmt"
	"testing"

	"github.com/oshirase/oshirase/store"
)

// TestKindOf: an error's kind, code and message, whichever layer made it
// and however it was wrapped — and nothing internal in the message of a
// failure of the server's own.
func TestKindOf(t *testing.T) {
	t.Parallel()
	internal := errors.New("dial tcp 10.0.0.7:6379: connection refused")
	for _, tc := range []struct {
		name      string
		err       error
		kind      Kind
		code, msg string
	}{
		{"app error", E(Invalid, "reason_required", "a reason is required", FieldError{"reason", "required"}), Invalid, "reason_required", "a reason is required"},
		{"wrapped app error", fmt.Errorf("resend: %w", E(Conflict, CodeNotSent, "not yet")), Conflict, CodeNotSent, "not yet"},
		{"no code", &Error{Kind: Limited, Msg: "slow down"}, Limited, "rate_limited", "slow down"},
		{"store not found", fmt.Errorf("campaign x: %w", store.ErrNotFound), NotFound, "not_found", "campaign x: not found"},
		{"store conflict", fmt.Errorf("recipient 3: %w", store.ErrConflict), Conflict, "conflict", "recipient 3: conflict"},
		{"not a draft", fmt.Errorf("campaign x is sending: %w", store.ErrNotDraft), Conflict, "conflict", "campaign x is sending: campaign is not a draft"},
		{"bad move", store.ErrInvalidMove, Conflict, "conflict", "invalid status change"},
		{"purging", store.ErrPurging, Conflict, "conflict", store.ErrPurging.Error()},
		{"last admin", store.ErrLastAdmin, Conflict, "conflict", store.ErrLastAdmin.Error()},
		{"unreplicated", fmt.Errorf("mark: %w", store.ErrUnreplicated), Internal, "internal", ""},
		{"server failure without a message", &Error{Kind: Unavailable, Code: "unavailable", Err: internal}, Unavailable, "unavailable", ""},
		{"refusal without a message", &Error{Kind: Conflict, Code: "x", Err: internal}, Conflict, "x", ""},
		{"size limit", fmt.Errorf("read: %w", &TooLargeError{Limit: 10}), TooLarge, "too_large", "read: upload larger than the limit of 10 bytes"},
		{"unavailable with a message", &Error{Kind: Unavailable, Code: "unavailable", Msg: "try again later", Err: internal}, Unavailable, "unavailable", "try again later"},
		{"anything else", internal, Internal, "internal", ""},
		{"wrapped anything else", fmt.Errorf("start: %w", internal), Internal, "internal", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if k := KindOf(tc.err); k != tc.kind {
				t.Errorf("KindOf = %s, want %s", k, tc.kind)
			}
			if c := CodeOf(tc.err); c != tc.code {
				t.Errorf("CodeOf = %q, want %q", c, tc.code)
			}
			if m := MessageOf(tc.err); m != tc.msg {
				t.Errorf("MessageOf = %q, want %q", m, tc.msg)
			}
		})
	}
	if !errors.Is(&Error{Kind: Unavailable, Err: internal}, internal) {
		t.Error("an Error does not unwrap to its cause")
	}
	for _, k := range Kinds() {
		if k.String() == "" || k.String()[0] == 'k' {
			t.Errorf("kind %d has no name", k)
		}
	}
}
