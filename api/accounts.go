package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
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

// AccountError is an account change refused (its Status and Code are the
// API's answer; the console shows Msg).
type AccountError struct {
	Status int
	Code   string
	Msg    string
	Fields []fieldError
}

func (e *AccountError) Error() string { return e.Msg }

// CreateAccount makes an account with a new API key, returned once: only
// its SHA-256 is kept.
func (s *Server) CreateAccount(ctx context.Context, name, role string) (*AccountView, error) {
	var fe []fieldError
	if msg := s.keys.CheckAccountName(name); msg != "" {
		fe = append(fe, fieldError{"name", msg})
	}
	r, err := auth.ParseRole(role)
	if err != nil {
		fe = append(fe, fieldError{"role", err.Error()})
	}
	if len(fe) > 0 {
		return nil, &AccountError{http.StatusUnprocessableEntity, "invalid_account", "the account cannot be created as given", fe}
	}
	secret, hash := auth.NewSecret()
	a := store.Account{Name: name, Role: string(r), CreatedAt: time.Now().UTC(), KeyHash: hash}
	if k := auth.Actor(ctx); k != nil {
		a.CreatedBy = k.Name
	}
	if err := s.store.CreateAccount(ctx, a); err != nil {
		return nil, accountErr(err)
	}
	s.auditCtx(ctx, store.AuditEntry{Action: "account.create", Details: accountDetails(name, "role", string(r))})
	v := accountView(&a)
	v.Key = secret
	return &v, nil
}

// Accounts lists the accounts.
func (s *Server) Accounts(ctx context.Context) ([]AccountView, error) {
	as, err := s.store.Accounts(ctx)
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
func (s *Server) UpdateAccount(ctx context.Context, name string, u AccountUpdate) (*AccountView, error) {
	c := store.AccountChange{Op: u.Op, OtherAdmins: s.keys.EnvAdmins()}
	var secret string
	switch u.Op {
	case "role":
		r, err := auth.ParseRole(u.Role)
		if err != nil {
			return nil, &AccountError{http.StatusUnprocessableEntity, "invalid_account", err.Error(), []fieldError{{"role", err.Error()}}}
		}
		c.Value = string(r)
	case "rotate":
		secret, c.Value = auth.NewSecret()
	case "disable", "enable", "delete":
	default:
		return nil, fmt.Errorf("account change %q", u.Op) // a programming error
	}
	if k := auth.Actor(ctx); k != nil && k.Account != nil && k.Name == name && u.Op != "rotate" {
		return nil, &AccountError{Status: http.StatusForbidden, Code: "own_account",
			Msg: "you cannot change your own role, disable or delete your own account; ask another admin"}
	}
	changed, before, err := s.store.ChangeAccount(ctx, name, c)
	if err != nil {
		return nil, accountErr(err)
	}
	if changed {
		e := store.AuditEntry{Action: "account." + u.Op, Details: accountDetails(name)}
		if u.Op == "role" {
			e.Details = accountDetails(name, "from", before, "to", c.Value)
		}
		s.auditCtx(ctx, e)
	}
	if u.Op == "delete" {
		return nil, nil
	}
	a, err := s.store.Account(ctx, name)
	if err != nil {
		return nil, accountErr(err)
	}
	v := accountView(a)
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

func accountErr(err error) error {
	switch {
	case errors.Is(err, store.ErrAccountExists):
		return &AccountError{Status: http.StatusConflict, Code: "exists", Msg: "an account of that name exists",
			Fields: []fieldError{{"name", "taken"}}}
	case errors.Is(err, store.ErrLastAdmin):
		return &AccountError{Status: http.StatusConflict, Code: "last_admin",
			Msg: "this would leave no enabled admin; make another account admin first"}
	case errors.Is(err, store.ErrNotFound):
		return &AccountError{Status: http.StatusNotFound, Code: "not_found", Msg: "no such account"}
	}
	return err
}

// accountAnswer writes err (an *AccountError or a failure) as the answer.
func (s *Server) accountAnswer(w http.ResponseWriter, r *http.Request, err error) {
	var ae *AccountError
	if errors.As(err, &ae) {
		var details any
		if len(ae.Fields) > 0 {
			details = ae.Fields
		}
		writeError(w, ae.Status, ae.Code, ae.Msg, details)
		return
	}
	s.storeError(w, r, err)
}

// createAccount answers POST /v1/accounts {"name","role"}: 201 with the
// account and its key, shown this once. It takes no Idempotency-Key: the
// kept answer would hold the key; a retry of a create that went through is
// a 409 (the name is taken), and rotating gives a new key.
func (s *Server) createAccount(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
		Role string `json:"role"`
	}
	if !decodeJSON(w, r, &req) {
		return
	}
	v, err := s.CreateAccount(r.Context(), req.Name, req.Role)
	if err != nil {
		s.accountAnswer(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/accounts/"+v.Name)
	writeJSON(w, http.StatusCreated, v)
}

func (s *Server) listAccounts(w http.ResponseWriter, r *http.Request) {
	vs, err := s.Accounts(r.Context())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"accounts": vs})
}

func (s *Server) getAccount(w http.ResponseWriter, r *http.Request) {
	a, err := s.store.Account(r.Context(), r.PathValue("name"))
	if err != nil {
		s.accountAnswer(w, r, accountErr(err))
		return
	}
	writeJSON(w, http.StatusOK, accountView(a))
}

// patchAccount answers PATCH /v1/accounts/{name} {"role"?, "disabled"?}.
func (s *Server) patchAccount(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Role     *string `json:"role"`
		Disabled *bool   `json:"disabled"`
	}
	if !decodeJSON(w, r, &req) {
		return
	}
	var ups []AccountUpdate
	if req.Role != nil {
		ups = append(ups, AccountUpdate{Op: "role", Role: *req.Role})
	}
	if req.Disabled != nil {
		op := "enable"
		if *req.Disabled {
			op = "disable"
		}
		ups = append(ups, AccountUpdate{Op: op})
	}
	if len(ups) == 0 {
		writeError(w, http.StatusUnprocessableEntity, "nothing_to_change", "give role or disabled", nil)
		return
	}
	var v *AccountView
	for _, u := range ups {
		var err error
		if v, err = s.UpdateAccount(r.Context(), r.PathValue("name"), u); err != nil {
			s.accountAnswer(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) rotateAccount(w http.ResponseWriter, r *http.Request) {
	v, err := s.UpdateAccount(r.Context(), r.PathValue("name"), AccountUpdate{Op: "rotate"})
	if err != nil {
		s.accountAnswer(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) deleteAccount(w http.ResponseWriter, r *http.Request) {
	if _, err := s.UpdateAccount(r.Context(), r.PathValue("name"), AccountUpdate{Op: "delete"}); err != nil {
		s.accountAnswer(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
