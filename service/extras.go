package service

import (
	"fmt"
	"net/http"

	"github.com/oshirase/oshirase/api"
	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/config"
	"github.com/oshirase/oshirase/console"
	"github.com/oshirase/oshirase/inbound"
	"github.com/oshirase/oshirase/monitoring"
)

// mountExtras adds what sits beside the JSON API: the operators' asynqmon UI
// at /monitoring/ (admin: full, operator: read-only), Prometheus /metrics
// (operator, admin), and the support console at /support/ (support, admin).
func mountExtras(s *Service) error {
	if s.API == nil {
		return nil
	}
	keys := s.API.Keys()
	s.API.HandlePublic("/monitoring/", monitoring.UI(keys, s.Redis, "/monitoring"))
	m, err := monitoring.Metrics(monitoring.Inspector(s.Redis), s.Store, s.Config.SMTPRate, s.Log)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	s.API.Handle("GET /metrics", m, auth.RoleOperator)
	con := console.New(s.API.App(), s.API.Keys(), s.Store, console.Config{IdempotencyTTL: s.API.IdempotencyTTL()}, s.Log)
	if s.Config.OIDCIssuer != "" {
		o, err := oidcFrom(s.Config)
		if err != nil {
			return err
		}
		con.EnableOIDC(o)
	}
	s.API.HandlePublic("/support/", con)
	// Provider webhooks are public: each request is authenticated by its
	// signature (SNS's, SendGrid's), not by an API key. Mounted even when
	// off, to say so (404) rather than ask for a key.
	prov, err := inbound.NewProviders(inbound.ProvidersConfig{Codec: s.Bounce, Store: s.Store, Log: s.Log, Events: s.Events,
		SESTopicARNs: s.Config.SESTopicARNs, SendGridKey: s.Config.SendGridPublicKey})
	if err != nil {
		return err
	}
	s.API.HandlePublic("POST /v1/inbound/ses", prov.SES())
	s.API.HandlePublic("POST /v1/inbound/sendgrid", prov.SendGrid())
	return nil
}

// oidcFrom reads the OIDC_* settings.
func oidcFrom(c *config.Config) (*auth.OIDC, error) {
	m, err := auth.ParseRoleMap(c.OIDCRoleMap)
	if err != nil {
		return nil, err
	}
	return auth.NewOIDC(auth.OIDCConfig{Issuer: c.OIDCIssuer, ClientID: c.OIDCClientID, ClientSecret: c.OIDCClientSecret,
		RedirectURL: c.OIDCRedirectURL, GroupsClaim: c.OIDCGroupsClaim, RoleMap: m})
}

// workerHTTP builds a worker-only process's small HTTP server
// (METRICS_ADDR): its delivery metrics live in this process, so without it
// a Prometheus scraping only the API would never see them. /metrics needs an
// operator or admin key like the API's; /healthz and /readyz are public.
func (s *Service) workerHTTP() error {
	ks, err := auth.ParseKeys(s.Config.APIKeys)
	if err != nil {
		return err
	}
	if len(ks) == 0 {
		s.Log.Warn("METRICS_ADDR is set but OSHIRASE_API_KEYS is empty: /metrics will refuse every scrape (401)")
	}
	m, err := monitoring.WorkerMetrics(s.Log)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", api.Healthz)
	mux.Handle("GET /readyz", api.Ready(s.Store, s.Mailer, s.Log, s.Store, s.guard.readyChecks()...))
	keys := auth.NewKeys(ks)
	keys.UseAccounts(s.Store) // operator accounts scrape too
	mux.Handle("GET /metrics", keys.Require(m, auth.RoleOperator))
	s.metricsHandler = mux
	return nil
}
