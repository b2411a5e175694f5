package console

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/oshirase/oshirase/app"
)

// explain says in the agent's language why an action was refused, and
// with what status the page answers: the console's one mapping of the
// application's errors (the API's is api's fail). ok is false for a
// failure of the server's own, which c.fail answers without details.
// resending says the action was a resend, whose generic refusals (the
// notice is gone, or changed under us) have sentences of their own.
func explain(r *http.Request, err error, resending bool) (msg string, status int, ok bool) {
	var e *app.Error
	errors.As(err, &e)
	kind, code := app.KindOf(err), app.CodeOf(err)
	status = http.StatusUnprocessableEntity
	switch kind {
	case app.Internal, app.Unavailable:
		return "", http.StatusInternalServerError, false
	case app.BadRequest:
		status = http.StatusBadRequest
	case app.NotFound:
		status = http.StatusNotFound
	case app.Conflict:
		status = http.StatusConflict
	case app.Forbidden:
		status = http.StatusForbidden
	case app.Limited:
		status = http.StatusTooManyRequests
		var le *app.LimitError
		if errors.As(err, &le) && le.Limit == "resends" {
			return tr(r, "Not resent: you have used your %d resends per hour. Try again in %s.", le.N, duration(r, le.RetryAfter)), status, true
		}
	}
	switch code {
	case "bad_query":
		return tr(r, "Enter at least 3 characters (2 of kana or kanji) of a customer id, name, email address or phone number."), status, true
	case "reason_required":
		return tr(r, "Not resent: enter the reason for the resend (it is kept in the audit log)."), status, true
	case "invalid_email":
		return tr(r, "Not resent: the corrected address is not an address a notice can be sent to. Check it for typos: it needs one @ and a domain such as example.jp, in letters a mail server accepts."), status, true
	case "invalid_locale":
		return tr(r, "Not resent: choose Japanese or English."), status, true
	case "invalid_reason":
		if e != nil && len(e.Fields) > 0 && strings.Contains(e.Fields[0].Error, "full card number") {
			return tr(r, "Not resent: the reason looks like it holds a full card number. Write at most the last 4 digits."), status, true
		}
		return tr(r, "Not resent: the reason is too long (at most 1,000 bytes)."), status, true
	case app.CodeSuppressed:
		return tr(r, "Not resent: the address is on the suppression list: mail to it bounced or was blocked. To send anyway, tick “send despite the suppression list” and resend."), status, true
	case app.CodeNotSent:
		return tr(r, "Not resent: this notice has not been sent yet. Resending it now could deliver it twice; it goes out by itself (see when on its row)."), status, true
	case app.CodePurging:
		return tr(r, "Not resent: this campaign's personal data is being deleted; nothing of it can be resent."), status, true
	case app.CodeCancelled:
		return tr(r, "Not resent: this notice was cancelled with its campaign and was never sent."), status, true
	}
	if resending {
		switch kind {
		case app.NotFound:
			return tr(r, "Not resent: this notice no longer exists (its campaign was deleted or its personal data purged). Search again."), status, true
		case app.Conflict:
			return tr(r, "Not resent: the notice is being changed by someone else; search again and retry."), status, true
		case app.Invalid:
			return tr(r, "Not resent: the form has a mistake; check the reason and the address."), status, true
		}
	}
	// The account page's refusals, and whatever else comes: the
	// application's own words, field by field.
	m := app.MessageOf(err)
	if e != nil {
		for _, f := range e.Fields {
			m += "; " + f.Field + ": " + f.Error
		}
	}
	return tr(r, "Not done: %s", m), status, true
}

// retryAfter sets Retry-After on a page refused by a quota.
func retryAfter(w http.ResponseWriter, err error) {
	var e *app.Error
	if errors.As(err, &e) && e.Kind == app.Limited {
		w.Header().Set("Retry-After", strconv.Itoa(app.RetrySeconds(e.RetryAfter)))
	}
}
