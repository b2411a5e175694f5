package service_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
)

// TestCampaignDKIM: with DKIM_DOMAIN, DKIM_SELECTOR and DKIM_KEY_FILE set,
// every notice a campaign sends — through the API, asynq and the worker —
// carries a signature that an independent verifier (go-msgauth) accepts
// against the published public key.
func TestCampaignDKIM(t *testing.T) {
	keyFile, txt := testenv.DKIMKey(t, "ed25519")

	st, sink := startServiceStack(t, map[string]string{
		"KEY_PREFIX": "dkim", "DKIM_DOMAIN": "example.jp", "DKIM_SELECTOR": "notice2019", "DKIM_KEY_FILE": keyFile,
	})
	csv, _ := recipientsCSV(6)
	var c notice.Campaign
	teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), &c)
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/recipients", "text/csv", []byte(csv), nil); code != 200 {
		t.Fatalf("upload: %d %s", code, body)
	}
	teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/start", "", nil, nil)
	teststack.WaitCampaign(t, st.Base, c.ID, 30*time.Second, func(c *notice.Campaign) bool { return c.Status == notice.CampaignDone })

	lookup := func(domain string) ([]string, error) {
		if domain != "notice2019._domainkey.example.jp" {
			return nil, errors.New("no such record: " + domain)
		}
		return []string{txt}, nil
	}
	msgs := sink.Messages()
	if len(msgs) != 6 {
		t.Fatalf("%d messages, want 6", len(msgs))
	}
	for _, m := range msgs {
		vs, err := dkim.VerifyWithOptions(bytes.NewReader(m.Data), &dkim.VerifyOptions{LookupTXT: lookup})
		if err != nil || len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "example.jp" {
			t.Errorf("%s: DKIM verification: %v %+v", m.To[0], err, vs)
		}
	}
}
