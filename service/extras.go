package service

import (
	"fmt"

	"github.com/oshirase/oshirase/api"
	"github.com/oshirase/oshirase/console"
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
	m, err := monitoring.Metrics(monitoring.Inspector(s.Redis), s.Store, s.Log)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	s.API.Handle("GET /metrics", m, api.RoleOperator)
	s.API.HandlePublic("/support/", console.New(s.API, s.Store, 0, s.Log))
	return nil
}
