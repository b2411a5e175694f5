package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/app"
)

// TestFailMapsEveryKind: the one place an application error becomes an
// answer gives every Kind its status, keeps the error's code, message and
// fields, sets Retry-After on a limit, and answers a failure of the
// server's own with a message that names nothing internal (the cause goes
// to the log only).
func TestFailMapsEveryKind(t *testing.T) {
	t.Parallel()
	const secret = "dial tcp 10.0.0.7:6379: connection refused"
	cause := errors.New(secret)
	want := map[app.Kind]int{
		app.BadRequest: 400, app.Invalid: 422, app.NotFound: 404, app.Conflict: 409,
		app.Forbidden: 403, app.Limited: 429, app.Unavailable: 503, app.Internal: 500,
		app.TooLarge: 413, app.Timeout: 408,
	}
	for _, k := range app.Kinds() {
		if _, ok := want[k]; !ok {
			t.Fatalf("kind %s has no status in this test: map it in fail and here", k)
		}
	}
	for k, status := range want {
		t.Run(k.String(), func(t *testing.T) {
			var logBuf bytes.Buffer
			s := &Server{log: slog.New(slog.NewTextHandler(&logBuf, nil))}
			var err error = &app.Error{Kind: k, Code: "some_code", Msg: "what went wrong",
				Fields: []app.FieldError{{Field: "reason", Error: "required"}}, RetryAfter: 1500 * time.Millisecond, Err: cause}
			if k == app.Internal {
				err = cause
			}
			w := httptest.NewRecorder()
			s.fail(w, httptest.NewRequest("POST", "/v1/x", nil), err)
			if w.Code != status {
				t.Fatalf("status %d, want %d", w.Code, status)
			}
			var body struct {
				Error struct {
					Code, Message string
					Details       []app.FieldError
				}
			}
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("answer %q: %v", w.Body, err)
			}
			if strings.Contains(w.Body.String(), secret) {
				t.Errorf("the answer names the internal cause: %s", w.Body)
			}
			switch k {
			case app.Internal:
				if body.Error.Code != "internal" || !strings.Contains(logBuf.String(), secret) {
					t.Errorf("internal: %s; log %q", w.Body, logBuf.String())
				}
			default:
				if body.Error.Code != "some_code" || body.Error.Message != "what went wrong" ||
					len(body.Error.Details) != 1 || body.Error.Details[0].Field != "reason" {
					t.Errorf("answer %s loses the error's code, message or fields", w.Body)
				}
			}
			if got := w.Header().Get("Retry-After"); (k == app.Limited) != (got == "2") {
				t.Errorf("Retry-After %q", got)
			}
			if k == app.Unavailable && !strings.Contains(logBuf.String(), secret) {
				t.Errorf("unavailable: the cause is not logged: %q", logBuf.String())
			}
		})
	}
	// A refusal made without a message of its own: the status's words,
	// never its cause's.
	w0 := httptest.NewRecorder()
	(&Server{log: slog.New(slog.DiscardHandler)}).fail(w0, httptest.NewRequest("GET", "/v1/x", nil), &app.Error{Kind: app.Conflict, Code: "x", Err: cause})
	if w0.Code != 409 || strings.Contains(w0.Body.String(), secret) || !strings.Contains(w0.Body.String(), `"message":"conflict"`) {
		t.Errorf("a refusal without a message: %d %s", w0.Code, w0.Body)
	}
	// A plain error: internal.
	w := httptest.NewRecorder()
	(&Server{log: slog.New(slog.DiscardHandler)}).fail(w, httptest.NewRequest("GET", "/v1/x", nil), http.ErrNoCookie)
	if w.Code != 500 {
		t.Errorf("a plain error: %d, want 500", w.Code)
	}
}
