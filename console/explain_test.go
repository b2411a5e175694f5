package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/store"
)

// TestExplain: the console's one mapping of the application's errors gives
// each refusal a sentence in the agent's language and a status, and hands
// a failure of the server's own to c.fail (ok false) without a sentence
// that could show its cause.
func TestExplain(t *testing.T) {
	t.Parallel()
	limited := &app.Error{Kind: app.Limited, Code: "rate_limited", RetryAfter: 90 * time.Second,
		Err: &app.LimitError{Key: "agent", Limit: "resends", N: 30, Per: "hour", RetryAfter: 90 * time.Second}}
	for _, tc := range []struct {
		name   string
		err    error
		doing  action
		status int
		en, ja string // a part of the sentence in each language
	}{
		{"reason required", app.E(app.Invalid, "reason_required", "a reason is required"), resending, 422, "enter the reason", "再送の理由を入力"},
		{"card in the reason", app.E(app.Invalid, "invalid_reason", "x", app.FieldError{Field: "reason", Error: "looks like a full card number"}), resending, 422, "full card number", "カード番号全体"},
		{"reason too long", app.E(app.Invalid, "invalid_reason", "x", app.FieldError{Field: "reason", Error: "at most 1000 bytes"}), resending, 422, "too long", "長すぎます"},
		{"not sent", app.E(app.Conflict, app.CodeNotSent, "x"), resending, 409, "has not been sent yet", "まだ送信されていません"},
		{"suppressed", app.E(app.Conflict, app.CodeSuppressed, "x"), resending, 409, "suppression list", "送信停止リスト"},
		{"cancelled", app.E(app.Conflict, app.CodeCancelled, "x"), resending, 409, "cancelled with its campaign", "中止により取り消され"},
		{"purging", app.E(app.Conflict, app.CodePurging, "x"), resending, 409, "being deleted", "消去中"},
		{"gone", fmt.Errorf("campaign c1: %w", store.ErrNotFound), resending, 404, "no longer exists", "もうありません"},
		{"changed meanwhile", fmt.Errorf("recipient 3: %w", store.ErrConflict), resending, 409, "someone else", "ほかの操作と重なりました"},
		{"limited", limited, resending, 429, "30 resends per hour", "再送上限（30 件）"},
		{"bad query", app.E(app.BadRequest, "bad_query", "too short"), searching, 400, "at least 3 characters", "3 文字以上"},
		{"notice gone", fmt.Errorf("campaign c1: %w", store.ErrNotFound), viewing, 404, "no longer exists", "もうありません"},
		{"no such account", app.E(app.NotFound, "not_found", "no such account"), managing, 404, "Not done: no such account", "実行できませんでした: no such account"},
		{"a resend code elsewhere", app.E(app.Invalid, "reason_required", "a reason is required"), managing, 422, "Not done: a reason is required", "実行できませんでした"},
		{"last admin", app.E(app.Conflict, "last_admin", "this would leave no enabled admin"), managing, 409, "Not done: this would leave no enabled admin", "実行できませんでした: this would leave no enabled admin"},
		{"account fields", app.E(app.Invalid, "invalid_account", "bad", app.FieldError{Field: "name", Error: "taken"}), managing, 422, "bad; name: taken", "実行できませんでした"},
	} {
		for _, lang := range []string{"en", "ja"} {
			r := httptest.NewRequest("POST", "/support/resend", nil)
			r.AddCookie(&http.Cookie{Name: langCookie, Value: lang})
			msg, status, ok := explain(r, tc.err, tc.doing)
			want := map[string]string{"en": tc.en, "ja": tc.ja}[lang]
			if !ok || status != tc.status || !strings.Contains(msg, want) {
				t.Errorf("%s (%s): %q %d %v, want %d and %q", tc.name, lang, msg, status, ok, tc.status, want)
			}
		}
	}
	internal := errors.New("dial tcp 10.0.0.7:6379: connection refused")
	for _, err := range []error{internal, &app.Error{Kind: app.Unavailable, Msg: "try later", Err: internal}} {
		if msg, _, ok := explain(httptest.NewRequest("GET", "/support/", nil), err, resending); ok || msg != "" {
			t.Errorf("%v: explained as %q; want it left to c.fail", err, msg)
		}
	}
}
