package console

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"html/template"
	"net/http"
	"time"

	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/store"
)

// The accounts page (/support/accounts, admins only) does what
// /v1/accounts does, through the same code (app.App's CreateAccount and
// UpdateAccount: same checks, same audit): create (the key shown once),
// disable, enable, rotate (the new key shown once), change role, delete.
// Forms are POST-redirect-GET with the session's CSRF token, and each
// form's one-time token is its Idempotency-Key, as the resend form's.

var accountsPages = map[string]*template.Template{"en": parseTemplate("en", "accounts.html"), "ja": parseTemplate("ja", "accounts.html")}

func init() {
	for k, v := range accountsJapanese {
		japanese[k] = v
	}
}

// accountsView is what the accounts page shows.
type accountsView struct {
	Lang, Actor, CSRF, FormToken string
	Role                         auth.Role
	Error, Flash                 string
	Secret                       string // a new key, shown once
	Accounts                     []app.AccountView
	Roles                        []auth.Role
}

func (c *Console) accountRoutes() {
	c.mux.HandleFunc("GET /support/accounts", c.accountsPage)
	c.mux.HandleFunc("POST /support/accounts/create", c.signedIn(c.adminOnly(c.accountCreate)))
	c.mux.HandleFunc("POST /support/accounts/change", c.signedIn(c.adminOnly(c.accountChange)))
	c.mux.HandleFunc("GET /support/oidc/login", c.oidcLogin)
	c.mux.HandleFunc("GET /support/oidc/callback", c.oidcCallback)
}

// sessionFP is what a session records of the key that opened it, and what
// must still match: the key's fingerprint (a rotated key ends the sessions
// of the old one) or, for an OIDC sign-in, the identity's subject.
func sessionFP(k *auth.Key, via string) string {
	if via == "oidc" {
		if k.Account == nil || k.Account.Subject == "" {
			return "" // never equal
		}
		h := sha256.Sum256([]byte("oshirase oidc subject\x00" + k.Account.Subject))
		return hex.EncodeToString(h[:12])
	}
	return k.Fingerprint()
}

func (c *Console) adminOnly(h func(http.ResponseWriter, *http.Request, *session)) func(http.ResponseWriter, *http.Request, *session) {
	return func(w http.ResponseWriter, r *http.Request, s *session) {
		if s.key.Role != auth.RoleAdmin {
			http.Error(w, tr(r, "Only admins manage accounts."), http.StatusForbidden)
			return
		}
		h(w, r, s)
	}
}

func (c *Console) accountsPage(w http.ResponseWriter, r *http.Request) {
	s, err := c.current(r)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if s == nil {
		http.Redirect(w, r, "/support/", http.StatusSeeOther)
		return
	}
	if s.key.Role != auth.RoleAdmin {
		http.Error(w, tr(r, "Only admins manage accounts."), http.StatusForbidden)
		return
	}
	ctx := auth.WithActor(r.Context(), s.key)
	v := accountsView{Actor: s.key.Name, Role: s.key.Role, CSRF: s.data.CSRF, FormToken: randomToken(),
		Roles: []auth.Role{auth.RoleSupport, auth.RoleOperator, auth.RoleAdmin}}
	f, err := c.store.TakeFlash(ctx, s.id)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if f != nil {
		v.Flash, v.Error, v.Secret = f.Flash, f.Error, f.Secret
	}
	if v.Accounts, err = c.app.Accounts(ctx); err != nil {
		c.fail(w, r, err)
		return
	}
	v.Lang = lang(r)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Language", v.Lang)
	if err := accountsPages[v.Lang].Execute(w, v); err != nil {
		c.log.Error("support console: render accounts", "err", err)
	}
}

func (c *Console) accountCreate(w http.ResponseWriter, r *http.Request, s *session) {
	name, role := r.PostFormValue("name"), r.PostFormValue("role")
	c.accountForm(w, r, s, "create/"+name, name+"\x00"+role, func(ctx context.Context) (string, string, error) {
		v, err := c.app.CreateAccount(ctx, name, role)
		if err != nil {
			return "", "", err
		}
		return tr(r, "Account %s created (%s). Its key is shown below once: give it to them now.", v.Name, v.Role), v.Key, nil
	})
}

func (c *Console) accountChange(w http.ResponseWriter, r *http.Request, s *session) {
	name, op, role := r.PostFormValue("name"), r.PostFormValue("op"), r.PostFormValue("role")
	switch op {
	case "role", "disable", "enable", "rotate", "delete":
	default:
		c.accountFlash(w, r, s, store.ConsoleFlash{Error: tr(r, "Unknown change %q.", op)})
		return
	}
	c.accountForm(w, r, s, op+"/"+name, role, func(ctx context.Context) (string, string, error) {
		v, err := c.app.UpdateAccount(ctx, name, app.AccountUpdate{Op: op, Role: role})
		if err != nil {
			return "", "", err
		}
		switch op {
		case "rotate":
			return tr(r, "New key for %s, shown below once; the old key no longer works.", name), v.Key, nil
		case "role":
			return tr(r, "%s is now %s.", name, v.Role), "", nil
		case "disable":
			return tr(r, "%s is disabled; their sessions have ended.", name), "", nil
		case "enable":
			return tr(r, "%s is enabled.", name), "", nil
		}
		return tr(r, "%s is deleted.", name), "", nil
	})
}

// accountForm runs a form's change once per form token (its Idempotency-Key,
// scoped to the change and the account) and redirects to the page with the
// outcome. A replay says the form was sent: the key a first post showed is
// kept nowhere to show again.
func (c *Console) accountForm(w http.ResponseWriter, r *http.Request, s *session, what, body string,
	do func(ctx context.Context) (msg, secret string, err error)) {
	ctx := r.Context()
	token := r.PostFormValue("form_token")
	var scope, claim string
	if token != "" {
		scope = store.IdemScope(s.key.Name, "POST", "/support/accounts/"+what, "console:"+token)
		fp := sha256.Sum256([]byte(body))
		ans, tok, err := c.store.BeginIdempotent(ctx, scope, hex.EncodeToString(fp[:]), 5*time.Minute)
		switch {
		case errors.Is(err, store.ErrIdemRunning):
			c.accountFlash(w, r, s, store.ConsoleFlash{Error: tr(r, "This change is already being made.")})
			return
		case errors.Is(err, store.ErrIdemMismatch), err == nil && ans != nil:
			c.accountFlash(w, r, s, store.ConsoleFlash{Error: tr(r, "This form was already sent; nothing was done again.")})
			return
		case err != nil:
			c.fail(w, r, err)
			return
		}
		claim = tok
	}
	msg, secret, err := do(ctx)
	c.settleForm(ctx, scope, claim, msg, err)
	if err == nil {
		c.accountFlash(w, r, s, store.ConsoleFlash{Flash: msg, Secret: secret})
		return
	}
	m, _, ok := explain(r, err, managing)
	if !ok {
		c.fail(w, r, err)
		return
	}
	c.accountFlash(w, r, s, store.ConsoleFlash{Error: m})
}

func (c *Console) accountFlash(w http.ResponseWriter, r *http.Request, s *session, f store.ConsoleFlash) {
	if err := c.store.SetFlash(r.Context(), s.id, f); err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/support/accounts", http.StatusSeeOther)
}

var accountsJapanese = map[string]string{
	"Accounts":                          "アカウント",
	"Only admins manage accounts.":      "アカウントを管理できるのは管理者だけです。",
	"Sign in with your company account": "会社のアカウントでログイン",
	"Account %s created (%s). Its key is shown below once: give it to them now.": "アカウント %s（%s）を作成しました。キーは下に一度だけ表示されます。今お渡しください。",
	"New key for %s, shown below once; the old key no longer works.":             "%s の新しいキーです（一度だけ表示）。古いキーは使えなくなりました。",
	"%s is now %s.": "%s の役割を %s にしました。",
	"%s is disabled; their sessions have ended.": "%s を無効にしました。ログイン中のセッションは終了しました。",
	"%s is enabled.":                     "%s を有効にしました。",
	"%s is deleted.":                     "%s を削除しました。",
	"Unknown change %q.":                 "不明な操作です: %q",
	"This change is already being made.": "この変更はすでに処理中です。",
	"This form was already sent; nothing was done again.": "このフォームは送信済みです。もう一度は実行していません。",
	"Not done: %s":         "実行できませんでした: %s",
	"New key (shown once)": "新しいキー（一度だけ表示）",
	"Name":                 "名前",
	"Role":                 "役割",
	"Created":              "作成日時",
	"Last used":            "最終利用",
	"State":                "状態",
	"enabled":              "有効",
	"disabled":             "無効",
	"Create":               "作成",
	"Create an account":    "アカウントを作成",
	"Change role":          "役割を変更",
	"Disable":              "無効にする",
	"Enable":               "有効にする",
	"Rotate key":           "キーを再発行",
	"Delete":               "削除",
	"Back to search":       "検索に戻る",
	"Sign-in":              "ログイン方法",
	"key":                  "キー",
	"Your identity provider did not sign you in; try again.":                    "ID プロバイダーでのログインに失敗しました。もう一度お試しください。",
	"This sign-in expired or did not start here; try again.":                    "このログインは期限切れか、ここで開始されたものではありません。もう一度お試しください。",
	"Your account is disabled.":                                                 "あなたのアカウントは無効です。",
	"None of your groups is given a role here; ask an admin.":                   "あなたのグループには役割が割り当てられていません。管理者にお問い合わせください。",
	"An account named %s exists and is not tied to your sign-in; ask an admin.": "%s という名前のアカウントがすでにあり、あなたのログインとは結び付いていません。管理者にお問い合わせください。",
	"The identity provider cannot be reached; try again later.":                 "ID プロバイダーに接続できません。しばらくしてからお試しください。",
}
