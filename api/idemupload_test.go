package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/api"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
)

func uploadReq(t *testing.T, base, cid, idem string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest("POST", base+"/v1/campaigns/"+cid+"/recipients", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+teststack.AdminKey)
	req.Header.Set("Content-Type", "text/csv")
	req.Header.Set("Idempotency-Key", idem)
	return req
}

func sendUpload(t *testing.T, req *http.Request) (int, string, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("upload: %v", err)
		return 0, "", nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get(api.ReplayHeader), b
}

// TestIdempotentUpload: a recipients upload (a stream, never held whole)
// honours Idempotency-Key: the retry of an upload that answered gets the
// first answer back and stores nothing; the same key with other rows is
// 422; a retry while the first upload still streams is 409 at once.
func TestIdempotentUpload(t *testing.T) {
	st := hookStack(t, "idemup", nil)
	var c notice.Campaign
	if code, b := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), &c); code != 201 {
		t.Fatalf("create: %d %s", code, b)
	}
	var csv strings.Builder
	csv.WriteString("email,name,locale,card_last4\n")
	for i := range 1200 {
		fmt.Fprintf(&csv, "u%d@example.jp,Name %d,ja,%04d\n", i, i, i%10000)
	}
	body := csv.String()

	code, rep, first := sendUpload(t, uploadReq(t, st.Base, c.ID, "up-1", strings.NewReader(body)))
	if code != 200 || rep != "" {
		t.Fatalf("first upload: %d replay=%q %s", code, rep, first)
	}
	code, rep, again := sendUpload(t, uploadReq(t, st.Base, c.ID, `"up-1"`, strings.NewReader(body)))
	if code != 200 || rep != "true" || !bytes.Equal(again, first) {
		t.Errorf("retry: %d replay=%q %s, want the first answer", code, rep, again)
	}
	code, _, b := sendUpload(t, uploadReq(t, st.Base, c.ID, "up-1", strings.NewReader(body+"other@example.jp,O,ja,9999\n")))
	if code != 422 || !strings.Contains(string(b), "idempotency_key_reused") {
		t.Errorf("same key, other rows: %d %s, want 422", code, b)
	}
	n := teststack.AuditCount(t, st.Base, c.ID, "recipients.upload")
	if n != 1 {
		t.Errorf("%d uploads audited, want 1", n)
	}
	if got := teststack.WaitCampaign(t, st.Base, c.ID, time.Second, func(*notice.Campaign) bool { return true }); got.Counts.Total != 1200 {
		t.Errorf("%d recipients, want 1200", got.Counts.Total)
	}

	// Concurrent: the first upload streams slowly (half its rows sent,
	// the rest held back); a retry with its key is 409 at once.
	pr, pw := io.Pipe()
	done := make(chan []byte)
	go func() {
		_, _, b := sendUpload(t, uploadReq(t, st.Base, c.ID, "up-2", pr))
		done <- b
	}()
	half := "email,name,locale,card_last4\nslow1@example.jp,S,ja,1234\n"
	if _, err := pw.Write([]byte(half)); err != nil {
		t.Fatal(err)
	}
	teststack.Eventually(t, "the slow upload begun", 10*time.Second, func() bool {
		got := teststack.WaitCampaign(t, st.Base, c.ID, time.Second, func(*notice.Campaign) bool { return true })
		return got.LastUpload != nil && got.LastUpload.State == notice.UploadRunning
	})
	code, _, b = sendUpload(t, uploadReq(t, st.Base, c.ID, "up-2", strings.NewReader(half)))
	if code != 409 || !strings.Contains(string(b), "idempotency_key_in_use") {
		t.Errorf("retry while the first streams: %d %s, want 409", code, b)
	}
	pw.Write([]byte("slow2@example.jp,S,ja,5678\n"))
	pw.Close()
	var ans struct{ Accepted int }
	if err := json.Unmarshal(<-done, &ans); err != nil || ans.Accepted != 2 {
		t.Errorf("the slow upload: %+v %v", ans, err)
	}
}
