package app

import (
	"errors"
	"fmt"
	"time"

	"github.com/oshirase/oshirase/store"
)

// Kind says what kind of failure an error is, whoever reports it: the API
// turns a Kind into a status code, the support console into a sentence in
// the agent's language, the CLI (through the status code) into an exit
// code. It is to this package what asynq's internal errors.Code is to
// asynq: the one vocabulary the adapters map, each in one place.
type Kind uint8

const (
	// Internal is a failure of the server's own (a bug, a dependency that
	// answered nonsense): the caller gets a generic message, the log the
	// cause. Every error that is not an *Error of another kind, nor one of
	// the store's sentinels, is Internal.
	Internal Kind = iota
	// BadRequest is a request that is malformed: a parameter that cannot
	// be read (a search query too short, a time that is not a time).
	BadRequest
	// Invalid is a well-formed request that cannot be carried out as given:
	// a field is missing or wrong (Fields says which).
	Invalid
	// NotFound is a campaign, recipient or account that does not exist.
	NotFound
	// Conflict is a request the current state does not allow (a resend of
	// a notice not sent yet, a start of a cancelled campaign).
	Conflict
	// Forbidden is a request the caller may not make, whatever its role.
	Forbidden
	// Limited is a request refused because the caller's quota is used up;
	// RetryAfter says when to try again.
	Limited
	// Unavailable is a request a dependency (Redis) refused: nothing was
	// changed, or what was is said in Msg; retrying later is right.
	Unavailable
	// TooLarge is a request past a size limit (an upload over
	// MAX_UPLOAD_BYTES).
	TooLarge
	// Timeout is a request whose data stopped coming (an upload that
	// stalled).
	Timeout
)

// Kinds lists every Kind, for the adapters' tests that each is mapped.
func Kinds() []Kind {
	out := make([]Kind, len(kindNames))
	for i := range out {
		out[i] = Kind(i)
	}
	return out
}

var kindNames = [...]string{"internal", "bad_request", "invalid", "not_found", "conflict", "forbidden", "limited", "unavailable", "too_large", "timeout"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// FieldError is one problem with one field of a request.
type FieldError struct {
	Field string `json:"field"`
	Error string `json:"error"`
}

// Error is the one error type the application returns for a request it
// refuses. Code is the machine word the API answers with (reason_required,
// suppressed, not_sent, …): stable, documented in api/openapi.json, what
// clients and the console switch on. Msg is for a person; it never holds
// a full card number or an internal detail.
type Error struct {
	Kind   Kind
	Code   string
	Msg    string
	Fields []FieldError
	// RetryAfter is when a Limited request may be tried again.
	RetryAfter time.Duration
	// Details is more for the caller when no field is at fault (the
	// campaign as it now is, after a start that half happened).
	Details any
	// Err is the cause, if any (a *LimitError, a store error): for
	// errors.Is/As and the log, not for the caller.
	Err error
}

// Error is the message and the cause: for the log. What a caller is told
// is MessageOf.
func (e *Error) Error() string {
	switch {
	case e.Err == nil:
		return e.Msg
	case e.Msg == "" || e.Msg == e.Err.Error():
		return e.Err.Error()
	}
	return e.Msg + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// E makes an *Error of kind k.
func E(k Kind, code, msg string, fields ...FieldError) *Error {
	return &Error{Kind: k, Code: code, Msg: msg, Fields: fields}
}

// KindOf is err's Kind: an *Error's own, the store's sentinels as what
// they mean, anything else Internal.
func KindOf(err error) Kind {
	var e *Error
	switch {
	case err == nil:
		return Internal
	case errors.As(err, &e):
		return e.Kind
	case errors.Is(err, store.ErrNotFound):
		return NotFound
	case errors.Is(err, store.ErrInvalidMove), errors.Is(err, store.ErrNotDraft), errors.Is(err, store.ErrConflict),
		errors.Is(err, store.ErrNotFinished), errors.Is(err, store.ErrPurging), errors.Is(err, store.ErrAccountExists),
		errors.Is(err, store.ErrLastAdmin):
		return Conflict
	}
	var tl *TooLargeError
	if errors.As(err, &tl) {
		return TooLarge
	}
	return Internal
}

// CodeOf is err's code: an *Error's own, else the usual word for its Kind.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Code != "" {
		return e.Code
	}
	switch k := KindOf(err); k {
	case Invalid:
		return "invalid"
	case Limited:
		return "rate_limited"
	default:
		return k.String()
	}
}

// MessageOf is what the caller is told of err: an *Error's Msg (never its
// cause's text: Error() is for the log), a store sentinel's text for the
// kinds whose text names only what the caller gave (not found, conflict),
// and nothing for a failure of the server's own, whose cause stays in the
// log.
func MessageOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		if e.Kind == Internal {
			return ""
		}
		return e.Msg
	}
	switch KindOf(err) {
	case Internal, Unavailable:
		return ""
	}
	return err.Error()
}
