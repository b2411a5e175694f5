package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// OIDCConfig is sign-in with the company's identity provider (OIDC_*
// settings). The protocol is coreos/go-oidc's (discovery, ID token
// signature, issuer, audience, expiry) and golang.org/x/oauth2's (code
// exchange, PKCE): a sign-in protocol is no place for code of one's own.
type OIDCConfig struct {
	Issuer, ClientID, ClientSecret, RedirectURL string
	GroupsClaim                                 string          // default "groups"
	RoleMap                                     map[string]Role // group → role
}

// ParseRoleMap reads OIDC_ROLE_MAP, "group=role,group=role".
func ParseRoleMap(s string) (map[string]Role, error) {
	m := map[string]Role{}
	for i, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		g, r, ok := strings.Cut(f, "=")
		g = strings.TrimSpace(g)
		if !ok || g == "" {
			return nil, fmt.Errorf("OIDC_ROLE_MAP entry %d: want group=role", i+1)
		}
		role, err := ParseRole(strings.TrimSpace(r))
		if err != nil {
			return nil, fmt.Errorf("OIDC_ROLE_MAP entry %d (%s): %w", i+1, g, err)
		}
		m[g] = role
	}
	return m, nil
}

// OIDC signs people in through an OpenID provider with the authorization
// code flow, state, nonce and PKCE.
type OIDC struct {
	cfg OIDCConfig

	mu       sync.Mutex // guards the fields below, set on first use
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier
}

// NewOIDC checks cfg. The provider is discovered on first sign-in (and
// again after a failure): oshirase starts while the provider is down.
func NewOIDC(cfg OIDCConfig) (*OIDC, error) {
	if cfg.Issuer == "" || cfg.ClientID == "" || cfg.RedirectURL == "" {
		return nil, errors.New("OIDC sign-in needs OIDC_ISSUER, OIDC_CLIENT_ID and OIDC_REDIRECT_URL")
	}
	if len(cfg.RoleMap) == 0 {
		return nil, errors.New("OIDC sign-in needs OIDC_ROLE_MAP (group=role,…): no group would get a role")
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = "groups"
	}
	return &OIDC{cfg: cfg}, nil
}

func (o *OIDC) setup(ctx context.Context) (*oidc.Provider, *oidc.IDTokenVerifier, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.provider == nil {
		p, err := oidc.NewProvider(ctx, o.cfg.Issuer)
		if err != nil {
			return nil, nil, fmt.Errorf("OIDC discovery at %s: %w", o.cfg.Issuer, err)
		}
		o.provider = p
		o.verifier = p.Verifier(&oidc.Config{ClientID: o.cfg.ClientID})
	}
	return o.provider, o.verifier, nil
}

func (o *OIDC) oauth(p *oidc.Provider) *oauth2.Config {
	return &oauth2.Config{
		ClientID: o.cfg.ClientID, ClientSecret: o.cfg.ClientSecret, RedirectURL: o.cfg.RedirectURL,
		Endpoint: p.Endpoint(), Scopes: []string{oidc.ScopeOpenID, "profile", "email"},
	}
}

// Start is a sign-in begun: the browser goes to URL; State, Nonce and
// Verifier are kept for the callback.
type Start struct {
	URL, State, Nonce, Verifier string
}

// Begin starts a sign-in.
func (o *OIDC) Begin(ctx context.Context) (*Start, error) {
	p, _, err := o.setup(ctx)
	if err != nil {
		return nil, err
	}
	st := &Start{State: randomString(), Nonce: randomString(), Verifier: oauth2.GenerateVerifier()}
	st.URL = o.oauth(p).AuthCodeURL(st.State, oidc.Nonce(st.Nonce), oauth2.S256ChallengeOption(st.Verifier))
	return st, nil
}

// Identity is who signed in, as the provider says.
type Identity struct {
	Subject string // issuer and subject: stable, unique
	Name    string // preferred_username, else email, else the subject
	Role    Role   // the most powerful role OIDC_ROLE_MAP gives their groups
	Groups  []string
}

// ErrNoRole is a person whose groups OIDC_ROLE_MAP gives no role.
var ErrNoRole = errors.New("none of your groups is given a role in oshirase")

// Finish exchanges the code (with the PKCE verifier), verifies the ID token
// (signature, issuer, audience, expiry) and its nonce, and maps the groups
// claim to a role. Claims missing from the ID token are read from the
// userinfo endpoint, as many providers put groups only there.
func (o *OIDC) Finish(ctx context.Context, code, verifier, nonce string) (*Identity, error) {
	p, v, err := o.setup(ctx)
	if err != nil {
		return nil, err
	}
	conf := o.oauth(p)
	tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, fmt.Errorf("OIDC code exchange: %w", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, errors.New("OIDC: the provider returned no ID token")
	}
	idt, err := v.Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("OIDC ID token: %w", err)
	}
	if idt.Nonce == "" || idt.Nonce != nonce {
		return nil, errors.New("OIDC ID token: the nonce is not this sign-in's")
	}
	claims := map[string]any{}
	if err := idt.Claims(&claims); err != nil {
		return nil, fmt.Errorf("OIDC ID token claims: %w", err)
	}
	if claims[o.cfg.GroupsClaim] == nil || (claims["preferred_username"] == nil && claims["email"] == nil) {
		if ui, err := p.UserInfo(ctx, conf.TokenSource(ctx, tok)); err == nil && ui.Subject == idt.Subject {
			more := map[string]any{}
			if err := ui.Claims(&more); err == nil {
				for k, val := range more {
					if _, ok := claims[k]; !ok {
						claims[k] = val
					}
				}
			}
		}
	}
	id := &Identity{Subject: idt.Issuer + " " + idt.Subject, Groups: groups(claims[o.cfg.GroupsClaim])}
	for _, c := range []string{"preferred_username", "email"} {
		if s, ok := claims[c].(string); ok && s != "" {
			id.Name = s
			break
		}
	}
	if id.Name == "" {
		id.Name = idt.Subject
	}
	id.Role = o.role(id.Groups)
	if id.Role == "" {
		return id, ErrNoRole
	}
	return id, nil
}

// groups reads a groups claim: a list of strings, or one string.
func groups(v any) []string {
	switch g := v.(type) {
	case string:
		return []string{g}
	case []any:
		var out []string
		for _, x := range g {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// role is the most powerful role the groups are given: admin, then
// support, then operator (order in the claim does not matter).
func (o *OIDC) role(gs []string) Role {
	rank := map[Role]int{RoleOperator: 1, RoleSupport: 2, RoleAdmin: 3}
	var best Role
	for _, g := range gs {
		if r, ok := o.cfg.RoleMap[g]; ok && rank[r] > rank[best] {
			best = r
		}
	}
	return best
}
