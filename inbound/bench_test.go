package inbound_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/oshirase/oshirase/bounce"
	"github.com/oshirase/oshirase/inbound"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

// BenchmarkHandle: one Postfix-shaped 5.1.1 DSN per recipient, each a new
// bounce (parse, token check, recipient read, record, suppression), from
// 8 goroutines against the real test Redis. No network between relay and
// receiver: this is the receiver's own cost per DSN.
func BenchmarkHandle(b *testing.B) {
	rdb, _ := testenv.Redis(b, testenv.DBInbound)
	st := store.New(rdb, "bench")
	codec, _ := bounce.New(domain, "bench-secret-0123456789")
	srv, err := inbound.Listen(inbound.Config{URL: "lmtp://127.0.0.1:0", Codec: codec, Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()
	c := &notice.Campaign{Name: "c", Template: "card-reissue", DefaultLocale: "ja", From: "a@example.jp"}
	if err := st.CreateCampaign(ctx, c); err != nil {
		b.Fatal(err)
	}
	n := b.N
	var ids []int64
	for from := 0; from < n; from += 5000 {
		var rs []notice.Recipient
		for i := from; i < min(n, from+5000); i++ {
			rs = append(rs, notice.Recipient{Email: fmt.Sprintf("u%d@dest.test", i), Locale: "ja"})
		}
		added, err := st.AddRecipients(ctx, c.ID, rs)
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, added.IDs...)
	}
	st.Start(ctx, c.ID)
	for from := 0; from < len(ids); from += 5000 {
		if _, err := st.Mark(ctx, c.ID, ids[from:min(len(ids), from+5000)], []notice.Status{notice.StatusPending}, notice.StatusSent); err != nil {
			b.Fatal(err)
		}
	}
	type job struct {
		rcpt string
		raw  []byte
	}
	jobs := make(chan job, 1024)
	go func() {
		for _, id := range ids {
			rp, tok, _ := codec.ReturnPath(bounce.Ref{Campaign: c.ID, Recipient: id})
			jobs <- job{rp, []byte(dsn(tok, "failed", "5.1.1", tok))}
		}
		close(jobs)
	}()
	b.ResetTimer()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			j, ok := <-jobs
			if !ok {
				return
			}
			if err := srv.Handle(ctx, j.rcpt, j.raw); err != nil {
				b.Error(err)
			}
		}
	})
	b.StopTimer()
	cp, _ := st.Campaign(ctx, c.ID)
	if cp.Counts.Bounced != int64(n) {
		b.Errorf("bounced %d of %d", cp.Counts.Bounced, n)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "DSN/s")
}
