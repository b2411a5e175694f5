package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/store"
)

// AccountView is an account as the API shows it: never its key's hash or
// OIDC subject; Key only in the answer that made the key.
type AccountView struct {
	store.Account
	HasKey bool   `json:"has_key"` // it may sign in with an API key
	OIDC   bool   `json:"oidc"`    // it signed in through the identity provider
	Key    string `json:"key,omitempty"`
}

func accountView(a *store.Account) AccountView {
	return AccountView{Account: *a, HasKey: a.KeyHash != "", OIDC: a.Subject != ""}
}

// CreateAccount makes an account with a new API key, returned once: only
// its SHA-256 is kept.
func (a *App) CreateAccount(ctx context.Context, name, role string) (*AccountView, error) {
	var fe []FieldError
	if msg := a.keys.CheckAccountName(name); msg != "" {
		fe = append(fe, FieldError{"name", msg})
	}
	r, err := auth.ParseRole(role)
	if err != nil {
		fe = append(fe, FieldError{"role", err.Error()})
	}
	if len(fe) > 0 {
		return nil, E(Invalid, "invalid_account", "the account cannot be created as given", fe...)
	}
	secret, hash := auth.NewSecret()
	acct := store.Account{Name: name, Role: string(r), CreatedAt: time.Now().UTC(), KeyHash: hash, CreatedBy: actorName(ctx)}
	if err := a.store.CreateAccount(ctx, acct); err != nil {
		return nil, accountErr(err)
	}
	a.Audit(ctx, store.AuditEntry{Action: "account.create", Details: accountDetails(name, "role", string(r))})
	v := accountView(&acct)
	v.Key = secret
	return &v, nil
}

// Account is the account name.
func (a *App) Account(ctx context.Context, name string) (*AccountView, error) {
	acct, err := a.store.Account(ctx, name)
	if err != nil {
		return nil, accountErr(err)
	}
	v := accountView(acct)
	return &v, nil
}

// Accounts lists the accounts.
func (a *App) Accounts(ctx context.Context) ([]AccountView, error) {
	as, err := a.store.Accounts(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]AccountView, len(as))
	for i := range as {
		out[i] = accountView(&as[i])
	}
	return out, nil
}

// AccountUpdate is a change to an account: Op is role (Role set), disable,
// enable, rotate or delete.
type AccountUpdate struct {
	Op   string
	Role string
}

// UpdateAccount changes the account name on behalf of the key in ctx.
// Nobody changes their own role, disables or deletes themselves (rotating
// one's own key is allowed), and the last enabled admin stays (the admin
// keys of OSHIRASE_API_KEYS count). A rotation returns the new key, once.
func (a *App) UpdateAccount(ctx context.Context, name string, u AccountUpdate) (*AccountView, error) {
	c := store.AccountChange{Op: u.Op, OtherAdmins: a.keys.EnvAdmins()}
	var secret string
	switch u.Op {
	case "role":
		r, err := auth.ParseRole(u.Role)
		if err != nil {
			return nil, E(Invalid, "invalid_account", err.Error(), FieldError{"role", err.Error()})
		}
		c.Value = string(r)
	case "rotate":
		secret, c.Value = auth.NewSecret()
	case "disable", "enable", "delete":
	default:
		return nil, fmt.Errorf("account change %q", u.Op) // a programming error
	}
	if k := auth.Actor(ctx); k != nil && k.Account != nil && k.Name == name && u.Op != "rotate" {
		return nil, E(Forbidden, "own_account", "you cannot change your own role, disable or delete your own account; ask another admin")
	}
	changed, before, err := a.store.ChangeAccount(ctx, name, c)
	if err != nil {
		return nil, accountErr(err)
	}
	if changed {
		e := store.AuditEntry{Action: "account." + u.Op, Details: accountDetails(name)}
		if u.Op == "role" {
			e.Details = accountDetails(name, "from", before, "to", c.Value)
		}
		a.Audit(ctx, e)
	}
	if u.Op == "delete" {
		return nil, nil
	}
	acct, err := a.store.Account(ctx, name)
	if err != nil {
		return nil, accountErr(err)
	}
	v := accountView(acct)
	v.Key = secret
	return &v, nil
}

// accountDetails is an audit entry's details: the account and more
// name/value pairs.
func accountDetails(name string, kv ...string) json.RawMessage {
	m := map[string]string{"account": name}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	b, _ := json.Marshal(m)
	return b
}

// accountErr is a store error about an account as the caller is told it.
func accountErr(err error) error {
	switch {
	case errors.Is(err, store.ErrAccountExists):
		return &Error{Kind: Conflict, Code: "exists", Msg: "an account of that name exists", Fields: []FieldError{{"name", "taken"}}, Err: err}
	case errors.Is(err, store.ErrLastAdmin):
		return &Error{Kind: Conflict, Code: "last_admin", Msg: "this would leave no enabled admin; make another account admin first", Err: err}
	case errors.Is(err, store.ErrNotFound):
		return &Error{Kind: NotFound, Code: "not_found", Msg: "no such account", Err: err}
	}
	return err
}
