package console

import (
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/store"
)

// Sign-in through the company's identity provider (OIDC_* settings): the
// authorization code flow with state, nonce and PKCE (auth.OIDC). The
// person becomes an account on first sign-in; each sign-in sets its role
// from their groups (OIDC_ROLE_MAP); a disabled account is refused, and its
// open sessions end at once (every request reads the account).

// oidcCookie binds a sign-in to the browser that began it: the callback's
// state must be the one in this cookie, so nobody can make a victim's
// browser finish a sign-in the attacker began (login CSRF). It is Lax, not
// Strict: it must come back with the provider's cross-site redirect.
const oidcCookie = "oshirase_oidc"

// EnableOIDC offers sign-in through o on the sign-in page.
func (c *Console) EnableOIDC(o *auth.OIDC) { c.oidc = o }

func (c *Console) oidcLogin(w http.ResponseWriter, r *http.Request) {
	if c.oidc == nil {
		http.NotFound(w, r)
		return
	}
	st, err := c.oidc.Begin(r.Context())
	if err != nil {
		c.log.Error("support console: OIDC sign-in", "err", err)
		c.loginPage(w, r, http.StatusBadGateway, tr(r, "The identity provider cannot be reached; try again later."))
		return
	}
	// The sign-in's state, nonce and PKCE verifier wait in the browser
	// (an HttpOnly cookie, 10 minutes), not in Redis: this page is public,
	// and a flood of sign-ins begun must not fill the database.
	ck := c.cookie(r, oidcCookie, st.State+"."+st.Nonce+"."+st.Verifier, 600)
	ck.SameSite = http.SameSiteLaxMode
	http.SetCookie(w, ck)
	http.Redirect(w, r, st.URL, http.StatusFound)
}

func (c *Console) oidcCallback(w http.ResponseWriter, r *http.Request) {
	if c.oidc == nil {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	ck, err := r.Cookie(oidcCookie)
	clear := c.cookie(r, oidcCookie, "", -1)
	clear.SameSite = http.SameSiteLaxMode
	http.SetCookie(w, clear)
	var state, nonce, verifier string
	if err == nil {
		parts := strings.Split(ck.Value, ".")
		if len(parts) == 3 {
			state, nonce, verifier = parts[0], parts[1], parts[2]
		}
	}
	// The state must be the one this browser's cookie holds: nobody can
	// make a victim's browser finish a sign-in the attacker began. The
	// cookie is cleared above, and the provider takes a code once.
	if !equal(state, q.Get("state")) {
		c.log.Warn("support console: OIDC callback refused: state is not this browser's")
		c.loginPage(w, r, http.StatusForbidden, tr(r, "This sign-in expired or did not start here; try again."))
		return
	}
	if e := q.Get("error"); e != "" || q.Get("code") == "" {
		c.log.Warn("support console: OIDC provider refused the sign-in", "error", e)
		c.loginPage(w, r, http.StatusUnauthorized, tr(r, "Your identity provider did not sign you in; try again."))
		return
	}
	id, err := c.oidc.Finish(r.Context(), q.Get("code"), verifier, nonce)
	if errors.Is(err, auth.ErrNoRole) {
		c.log.Warn("support console: OIDC sign-in refused: no role for the groups", "name", id.Name, "groups", id.Groups)
		c.loginPage(w, r, http.StatusForbidden, tr(r, "None of your groups is given a role here; ask an admin."))
		return
	}
	if err != nil {
		c.log.Warn("support console: OIDC sign-in failed", "err", err)
		c.loginPage(w, r, http.StatusUnauthorized, tr(r, "Your identity provider did not sign you in; try again."))
		return
	}
	key, msg, err := c.oidcAccount(r.Context(), r, id)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if msg != "" {
		c.loginPage(w, r, http.StatusForbidden, msg)
		return
	}
	if !mayUse(key.Role) {
		c.loginPage(w, r, http.StatusForbidden, tr(r, "Only support and admin keys may use the support console."))
		return
	}
	sid := randomToken()
	data := store.Session{KeyName: key.Name, Via: "oidc", KeyFP: sessionFP(key, "oidc"), CSRF: randomToken(), At: time.Now().UTC()}
	if err := c.store.CreateSession(r.Context(), sid, data, c.ttl); err != nil {
		c.fail(w, r, err)
		return
	}
	http.SetCookie(w, c.cookie(r, sessionCookie, sid, int(c.ttl/time.Second)))
	c.log.Info("support console: signed in through OIDC", "account", key.Name, "role", key.Role)
	// A page, not a redirect: the browser arrived here from the provider's
	// site, and some browsers keep a SameSite=Strict cookie (the session)
	// from every request of a redirect chain that began cross-site. This
	// page's own navigation is same-site.
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	callbackPage.Execute(w, nil)
}

var callbackPage = template.Must(template.New("cb").Parse(`<!doctype html><meta charset="utf-8">` +
	`<meta http-equiv="refresh" content="0;url=/support/"><title>oshirase</title><a href="/support/" id="continue">Continue</a>`))

// oidcAccount finds or makes the account of id and gives it the role its
// groups give now. msg is a refusal to show (disabled; the name taken by an
// account not tied to this identity).
func (c *Console) oidcAccount(ctx context.Context, r *http.Request, id *auth.Identity) (*auth.Key, string, error) {
	a, err := c.store.AccountBySubject(ctx, id.Subject)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if msg := c.keys.CheckAccountName(id.Name); msg != "" {
			return nil, tr(r, "An account named %s exists and is not tied to your sign-in; ask an admin.", id.Name), nil
		}
		a = &store.Account{Name: id.Name, Role: string(id.Role), CreatedAt: time.Now().UTC(), CreatedBy: "oidc", Subject: id.Subject}
		if err := c.store.CreateAccount(ctx, *a); errors.Is(err, store.ErrAccountExists) {
			return nil, tr(r, "An account named %s exists and is not tied to your sign-in; ask an admin.", id.Name), nil
		} else if err != nil {
			return nil, "", err
		}
		c.audit(ctx, store.AuditEntry{Actor: a.Name, Action: "account.create", Reason: "first sign-in through OIDC",
			Details: jsonDetails(map[string]any{"account": a.Name, "role": a.Role, "groups": id.Groups})})
	case err != nil:
		return nil, "", err
	case a.Disabled:
		c.log.Warn("support console: OIDC sign-in refused: account disabled", "account", a.Name)
		return nil, tr(r, "Your account is disabled."), nil
	case a.Role != string(id.Role):
		// The provider's groups decide, also against the last-admin
		// rule: whoever runs the provider runs who is admin.
		if _, _, err := c.store.ChangeAccount(ctx, a.Name, store.AccountChange{Op: "role", Value: string(id.Role), OtherAdmins: 1}); err != nil {
			return nil, "", err
		}
		c.audit(ctx, store.AuditEntry{Actor: a.Name, Action: "account.role", Reason: "groups at OIDC sign-in",
			Details: jsonDetails(map[string]any{"account": a.Name, "from": a.Role, "to": id.Role, "groups": id.Groups})})
	}
	key, err := c.keys.Resolve(ctx, a.Name)
	if errors.Is(err, auth.ErrDisabled) {
		return nil, tr(r, "Your account is disabled."), nil
	}
	if err != nil {
		return nil, "", err
	}
	return key, "", nil
}

func (c *Console) audit(ctx context.Context, e store.AuditEntry) {
	if err := c.store.Audit(context.WithoutCancel(ctx), e); err != nil {
		c.log.Error("support console: audit log write failed", "action", e.Action, "err", err)
	}
}

func jsonDetails(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}
