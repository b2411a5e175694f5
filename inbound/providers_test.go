package inbound_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/oshirase/oshirase/bounce"
	"github.com/oshirase/oshirase/inbound"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

// provFixture is a started campaign of n recipients, all sent, and the
// provider webhooks served by a real HTTP server.
type provFixture struct {
	st    *store.Store
	codec *bounce.Codec
	prov  *inbound.Providers
	cid   string
	url   string // the HTTP server: POST url+"/v1/inbound/ses" or "/v1/inbound/sendgrid"
	logs  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newProvFixture(t *testing.T, n int, cfg inbound.ProvidersConfig) *provFixture {
	t.Helper()
	rdb, _ := testenv.Redis(t, testenv.DBInbound)
	st := store.New(rdb, "pv")
	codec, err := bounce.New(domain, "test-secret-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cfg.Codec, cfg.Store, cfg.Log = codec, st, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	prov, err := inbound.NewProviders(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/inbound/ses", prov.SES())
	mux.Handle("/v1/inbound/sendgrid", prov.SendGrid())
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	ctx := context.Background()
	c := &notice.Campaign{Name: "c", Template: "card-reissue", DefaultLocale: "ja", From: "a@example.jp"}
	if err := st.CreateCampaign(ctx, c); err != nil {
		t.Fatal(err)
	}
	var rs []notice.Recipient
	var ids []int64
	for i := 1; i <= n; i++ {
		rs = append(rs, notice.Recipient{Email: fmt.Sprintf("u%d@dest.test", i), Locale: "ja"})
		ids = append(ids, int64(i))
	}
	if _, err := st.AddRecipients(ctx, c.ID, rs); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Start(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Mark(ctx, c.ID, ids, []notice.Status{notice.StatusPending}, notice.StatusSent); err != nil {
		t.Fatal(err)
	}
	return &provFixture{st: st, codec: codec, prov: prov, cid: c.ID, url: hs.URL, logs: logs}
}

func (f *provFixture) token(t *testing.T, rid int64) string {
	t.Helper()
	tok, err := f.codec.Encode(bounce.Ref{Campaign: f.cid, Recipient: rid})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// post sends body with headers and returns the status and the body.
func post(t *testing.T, url string, body []byte, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// state is what a recipient's outcome looks like from outside: status,
// the kinds in its returned history, whether its address is suppressed
// (and why).
type state struct {
	status     notice.Status
	kinds      string
	suppressed string
}

func (f *provFixture) state(t *testing.T, rid int64) state {
	t.Helper()
	ctx := context.Background()
	r, err := f.st.Recipient(ctx, f.cid, rid)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range r.Returned {
		kinds = append(kinds, e.Kind)
	}
	s := state{status: r.Status, kinds: strings.Join(kinds, ",")}
	sup, err := f.st.Suppressed(ctx, []string{r.Email})
	if err != nil {
		t.Fatal(err)
	}
	if sup[r.Email] != nil {
		s.suppressed = sup[r.Email].Reason
	}
	return s
}

// audit lists the campaign's audit entries as "actor action recipient via".
func (f *provFixture) audit(t *testing.T) []string {
	t.Helper()
	es, _, err := f.st.AuditLog(context.Background(), store.AuditQuery{CampaignID: f.cid})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		var d struct {
			Via string `json:"via"`
		}
		json.Unmarshal(e.Details, &d)
		out = append(out, fmt.Sprintf("%s %s %d %s", e.Actor, e.Action, e.Recipient, d.Via))
	}
	return out
}

// noAddresses fails if a log line holds an address in clear.
func (f *provFixture) noAddresses(t *testing.T) {
	t.Helper()
	if strings.Contains(f.logs.String(), "@dest.test") || strings.Contains(f.logs.String(), "@"+domain) {
		t.Errorf("an address in the logs:\n%s", f.logs.String())
	}
}
