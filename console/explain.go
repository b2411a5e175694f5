package console

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/oshirase/oshirase/app"
)

// action is what the agent was doing when refused: some refusals read
// differently for each ("this notice no longer exists" is not what a
// missing account is).
type action int

const (
	searching action = iota
	viewing          // a notice as it was sent
	resending
	managing // the accounts page
)

// kindStatus is the page's status for each Kind of refusal.
var kindStatus = map[app.Kind]int{
	app.BadRequest: http.StatusBadRequest, app.Invalid: http.StatusUnprocessableEntity,
	app.NotFound: http.StatusNotFound, app.Conflict: http.StatusConflict, app.Forbidden: http.StatusForbidden,
	app.Limited: http.StatusTooManyRequests, app.TooLarge: http.StatusRequestEntityTooLarge, app.Timeout: http.StatusRequestTimeout,
}

// explain says in the agent's language why an action was refused, and
// with what status the page answers: the console's one mapping of the
// application's errors (the API's is api's fail). ok is false for a
// failure of the server's own, which c.fail answers without details.
func explain(r *http.Request, err error, doing action) (msg string, status int, ok bool) {
	kind := app.KindOf(err)
	status, ok = kindStatus[kind]
	if !ok {
		return "", http.StatusInternalServerError, false
	}
	if code := app.CodeOf(err); code == "bad_query" {
		return tr(r, "Enter at least 3 characters (2 of kana or kanji) of a customer id, name, email address or phone number."), status, true
	}
	switch doing {
	case resending:
		if msg := resendRefusal(r, err, kind); msg != "" {
			return msg, status, true
		}
	case viewing:
		if kind == app.NotFound {
			return tr(r, "This notice no longer exists (its campaign was deleted or its personal data purged)."), status, true
		}
	}
	// The account page's refusals, and whatever else comes: the
	// application's own words, field by field.
	m := app.MessageOf(err)
	var e *app.Error
	if errors.As(err, &e) {
		for _, f := range e.Fields {
			m += "; " + f.Field + ": " + f.Error
		}
	}
	return tr(r, "Not done: %s", m), status, true
}

// resendRefusal is the sentence for a refused resend, or "".
func resendRefusal(r *http.Request, err error, kind app.Kind) string {
	var le *app.LimitError
	if errors.As(err, &le) {
		return tr(r, "Not resent: you have used your %d resends per hour. Try again in %s.", le.N, duration(r, le.RetryAfter))
	}
	var e *app.Error
	errors.As(err, &e)
	switch app.CodeOf(err) {
	case "reason_required":
		return tr(r, "Not resent: enter the reason for the resend (it is kept in the audit log).")
	case "invalid_email":
		return tr(r, "Not resent: the corrected address is not an address a notice can be sent to. Check it for typos: it needs one @ and a domain such as example.jp, in letters a mail server accepts.")
	case "invalid_locale":
		return tr(r, "Not resent: choose Japanese or English.")
	case "invalid_reason":
		if e != nil && len(e.Fields) > 0 && strings.Contains(e.Fields[0].Error, "full card number") {
			return tr(r, "Not resent: the reason looks like it holds a full card number. Write at most the last 4 digits.")
		}
		return tr(r, "Not resent: the reason is too long (at most 1,000 bytes).")
	case app.CodeSuppressed:
		return tr(r, "Not resent: the address is on the suppression list: mail to it bounced or was blocked. To send anyway, tick “send despite the suppression list” and resend.")
	case app.CodeNotSent:
		return tr(r, "Not resent: this notice has not been sent yet. Resending it now could deliver it twice; it goes out by itself (see when on its row).")
	case app.CodePurging:
		return tr(r, "Not resent: this campaign's personal data is being deleted; nothing of it can be resent.")
	case app.CodeCancelled:
		return tr(r, "Not resent: this notice was cancelled with its campaign and was never sent.")
	}
	switch kind {
	case app.NotFound:
		return tr(r, "Not resent: this notice no longer exists (its campaign was deleted or its personal data purged). Search again.")
	case app.Conflict:
		return tr(r, "Not resent: the notice is being changed by someone else; search again and retry.")
	case app.Invalid:
		return tr(r, "Not resent: the form has a mistake; check the reason and the address.")
	}
	return ""
}

// refused renders v with why err refused what the agent was doing, or
// answers a failure of the server's own.
func (c *Console) refused(w http.ResponseWriter, r *http.Request, v view, err error, doing action) {
	msg, status, ok := explain(r, err, doing)
	if !ok {
		c.fail(w, r, err)
		return
	}
	v.Error = msg
	c.render(w, r, status, v)
}

// retryAfter sets Retry-After on a page refused by a quota.
func retryAfter(w http.ResponseWriter, err error) {
	var e *app.Error
	if errors.As(err, &e) && e.Kind == app.Limited {
		w.Header().Set("Retry-After", strconv.Itoa(app.RetrySeconds(e.RetryAfter)))
	}
}
