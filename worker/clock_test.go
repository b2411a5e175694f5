package worker

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/internal/clock"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/mailer"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/smtpsink"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
	"github.com/oshirase/oshirase/templates"
)

// TestRetryAgeOnTheStoresClock: a recipient the server keeps greylisting is
// retried on the MTA's schedule and given up RETRY_MAX_AGE after its first
// attempt, measured on the one clock store and worker share — three days
// pass in the test by moving the clock, not by waiting.
func TestRetryAgeOnTheStoresClock(t *testing.T) {
	rdb, _ := testenv.Redis(t, testenv.DBWorker)
	ctx := context.Background()
	sim := clock.NewSim(time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC))
	st := store.New(rdb, "clk")
	st.SetClock(sim)
	sink, err := smtpsink.Start(smtpsink.Options{Reply: func(stage smtpsink.Stage, _, _ string, _ int) *smtp.SMTPError {
		if stage == smtpsink.StageRcpt {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "greylisted"}
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	pool, err := mailer.NewPool(mailer.Options{URL: sink.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	ts, err := templates.Load("")
	if err != nil {
		t.Fatal(err)
	}
	q := asynq.NewClientFromRedisClient(rdb)
	w := New(Config{}, st, q, ts, pool, slog.New(slog.DiscardHandler))

	var c notice.Campaign
	if err := json.Unmarshal(campaignJSON, &c); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateCampaign(ctx, &c); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddRecipients(ctx, c.ID, []notice.Recipient{{Email: "grey@example.jp", Locale: "ja", CardLast4: "1234"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Start(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	task := asynq.NewTask(tasks.TypeDeliver, []byte(`{"campaign_id":"`+c.ID+`","recipient_id":1}`))
	first := sim.Now()

	// First attempt: greylisted, retrying, the next try after RETRY_BASE.
	var re *retryError
	if err := w.handleDeliver(ctx, task); !errors.As(err, &re) || re.Delay != w.cfg.RetryBase {
		t.Fatalf("first attempt: %v, want a retry after %s", err, w.cfg.RetryBase)
	}
	r, err := st.Recipient(ctx, c.ID, 1)
	if err != nil || r.Status != notice.StatusRetrying || r.Attempts != 1 || r.FirstTryAt == nil || !r.FirstTryAt.Equal(first) {
		t.Fatalf("after the first attempt: %+v %v (first try at the clock's %s)", r, err, first)
	}
	// A day later, still inside RETRY_MAX_AGE: retried again, backing off.
	sim.Advance(24 * time.Hour)
	if err := w.handleDeliver(ctx, task); !errors.As(err, &re) || re.Delay != w.backoff(2) {
		t.Fatalf("second attempt: %v, want a retry after %s", err, w.backoff(2))
	}
	// Past RETRY_MAX_AGE after the first attempt: failed for good.
	sim.Advance(w.cfg.RetryMaxAge)
	if err := w.handleDeliver(ctx, task); err == nil || errors.As(err, &re) {
		t.Fatalf("attempt past RETRY_MAX_AGE: %v, want a permanent failure", err)
	}
	if r, err := st.Recipient(ctx, c.ID, 1); err != nil || r.Status != notice.StatusFailed || r.Attempts != 3 {
		t.Fatalf("after RETRY_MAX_AGE: %+v %v", r, err)
	}
}

var campaignJSON = []byte(`{"name": "clock", "template": "card-reissue", "default_locale": "ja",
 "from": "Example Co. <notice@example.jp>",
 "data": {"company": {"ja": "株式会社テスト", "en": "Test Co., Ltd."}, "service": {"ja": "テストストア", "en": "Test Store"},
  "discovered_on": "2019-05-28", "period_start": "2009-05-01", "period_end": "2019-05-27",
  "cause": {"ja": "第三者による不正アクセスが原因です。", "en": "Unauthorized access by a third party."},
  "secondary_harm": {"ja": "不正利用の報告は受けておりません。", "en": "No misuse has been reported."},
  "leaked_items": {"ja": ["カード番号", "有効期限", "名義人名"], "en": ["Card number", "Expiry date", "Cardholder name"]},
  "actions_taken": {"ja": ["カード決済を停止いたしました"], "en": ["Suspended card payments"]},
  "hotline": "0120-000-000", "hotline_hours": "9:00-18:00", "contact_email": "support@example.jp"}}`)
