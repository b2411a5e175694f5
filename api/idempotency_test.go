package api_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/oshirase/oshirase/api"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

// postIdem posts body with an Idempotency-Key and returns the status, the
// replay header and the body.
func postIdem(t *testing.T, base, key, path, idem string, body []byte) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	if idem != "" {
		req.Header.Set("Idempotency-Key", idem)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("POST %s: %v", path, err)
		return 0, "", nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get(api.ReplayHeader), b
}

// TestIdempotentNotification is the reproduction: the same
// notification posted twice with "Idempotency-Key: abc-123" made two
// campaigns and two messages. Now the retry gets the first answer back and
// the relay one message; the key read quoted is the same key; the same key
// with another body is 422; a bad key is 400.
func TestIdempotentNotification(t *testing.T) {
	st, sink := startSupportStack(t, nil)
	const addr = "idem@example.jp"
	body := []byte(`{"from":"n@example.jp","data":` + string(mustData(t)) + `,"recipient":{"email":"` + addr + `"}}`)

	code, replay, first := postIdem(t, st.Base, teststack.AdminKey, "/v1/notifications", "abc-123", body)
	if code != 202 || replay != "" {
		t.Fatalf("first: %d replay=%q %s", code, replay, first)
	}
	for _, key := range []string{"abc-123", `"abc-123"`} {
		code, replay, again := postIdem(t, st.Base, teststack.AdminKey, "/v1/notifications", key, body)
		if code != 202 || replay != "true" || !bytes.Equal(again, first) {
			t.Errorf("retry with %s: %d replay=%q %s, want the first answer %s", key, code, replay, again, first)
		}
	}
	other := bytes.Replace(body, []byte(addr), []byte("someone.else@example.jp"), 1)
	if code, _, b := postIdem(t, st.Base, teststack.AdminKey, "/v1/notifications", "abc-123", other); code != 422 || !bytes.Contains(b, []byte("idempotency_key_reused")) {
		t.Errorf("same key, other body: %d %s, want 422", code, b)
	}
	for _, bad := range []string{"ключ", string(bytes.Repeat([]byte("k"), 256)), `""`} {
		if code, _, b := postIdem(t, st.Base, teststack.AdminKey, "/v1/notifications", bad, body); code != 400 || !bytes.Contains(b, []byte("Idempotency-Key")) {
			t.Errorf("key %.20q: %d %s, want 400 naming Idempotency-Key", bad, code, b)
		}
	}

	teststack.Eventually(t, "the notice", 20*time.Second, func() bool { return sink.CountFor(addr) >= 1 })
	var list struct {
		Campaigns []notice.Campaign `json:"campaigns"`
	}
	if code, b := teststack.Do(t, st.Base, teststack.AdminKey, "GET", "/v1/campaigns", "", nil, &list); code != 200 {
		t.Fatalf("list: %d %s", code, b)
	}
	if len(list.Campaigns) != 1 {
		t.Errorf("%d campaigns, want 1", len(list.Campaigns))
	}
	// Every request has answered: no other message can be on its way.
	if n := sink.CountFor(addr); n != 1 {
		t.Errorf("the relay got %d messages for %s, want 1", n, addr)
	}
}

// TestIdempotentConcurrentResends: support agents' clients that time out
// and retry at once, with the same key, queue one resend, not several; a
// request whose key is still held by a running one is 409.
func TestIdempotentConcurrentResends(t *testing.T) {
	st, sink := startSupportStack(t, map[string]string{"RESENDS_PER_HOUR": "0"})
	const addr = "twice@example.jp"
	cid, ids := sentCampaign(t, st, "idem", []notice.Recipient{{Email: addr, Name: "二度", Locale: "ja", CardLast4: "1111"}})
	path := fmt.Sprintf("/v1/campaigns/%s/recipients/%d/resend", cid, ids[0])
	body := []byte(`{"reason":"customer called"}`)

	const n = 8
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _, _ = postIdem(t, st.Base, teststack.SupportKey, path, "retry-7", body)
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != 202 && c != 409 {
			t.Errorf("request %d: %d, want 202 or 409", i, c)
		}
	}
	teststack.Eventually(t, "the resend", 20*time.Second, func() bool { return sink.CountFor(addr) >= 2 })
	r := lookup(t, st, addr).Notices[0]
	if len(r.Resends) != 1 {
		t.Errorf("%d resends queued, want 1", len(r.Resends))
	}
	if got := sink.CountFor(addr); got != 2 {
		t.Errorf("the relay got %d messages, want 2 (the notice and one resend)", got)
	}

	// A key whose first request is still running: 409 with Retry-After.
	scope := store.IdemScope("support", "POST", path, "running-1")
	if _, _, err := st.Svc.Store.BeginIdempotent(context.Background(), scope, "fp", time.Minute); err != nil {
		t.Fatal(err)
	}
	if code, _, b := postIdem(t, st.Base, teststack.SupportKey, path, "running-1", body); code != 409 || !bytes.Contains(b, []byte("idempotency_key_in_use")) {
		t.Errorf("key in use: %d %s, want 409", code, b)
	}
	// Keys are scoped to the API key's name: the admin's "retry-7" is its own.
	if code, replay, b := postIdem(t, st.Base, teststack.AdminKey, "/v1/campaigns", "retry-7", teststack.CampaignJSON(nil)); code != 201 || replay != "" {
		t.Errorf("another key's name: %d replay=%q %s", code, replay, b)
	}
}
