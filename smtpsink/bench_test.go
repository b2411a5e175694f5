package smtpsink_test

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oshirase/oshirase/mailer"
	"github.com/oshirase/oshirase/smtpsink"
)

// BenchmarkPoolSend measures oshirase's real send path — go-mail message,
// pooled persistent connections — into a counting sink: the ceiling the
// worker can reach on this machine.
//
//	go test ./smtpsink -run '^$' -bench PoolSend -benchtime 5000x
func BenchmarkPoolSend(b *testing.B) {
	for _, cs := range []string{"utf-8", "iso-2022-jp"} {
		b.Run(cs, func(b *testing.B) {
			sink, err := smtpsink.Start(smtpsink.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer sink.Close()
			pool, err := mailer.NewPool(mailer.Options{URL: sink.URL(), PoolSize: 4, Timeout: 10 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			defer pool.Close()
			text := strings.Repeat("お客様のクレジットカード情報が流出した可能性がございます。カードの再発行をお願いいたします。\n", 30)
			var seq atomic.Int64
			b.SetParallelism(4) // GOMAXPROCS×4 goroutines share 4 connections, as workers do
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					n := seq.Add(1)
					m := &mailer.Message{
						From: "Example <noreply@example.jp>", To: "user" + strconv.FormatInt(n, 10) + "@example.jp", ToName: "山田 太郎",
						Subject: "【重要】カード情報流出のお詫び", Text: text, HTML: "<p>" + text + "</p>",
						MessageID: "c-1.r-" + strconv.FormatInt(n, 10) + ".d-1@example.jp", Charset: cs,
					}
					if err := pool.Send(context.Background(), m); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			if sink.Count() != int64(b.N) {
				b.Errorf("sink counted %d, sent %d", sink.Count(), b.N)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
			b.ReportMetric(float64(sink.Sessions()), "sessions")
		})
	}
}

// BenchmarkSink measures the sink alone with go-smtp clients on 4
// persistent connections: it must stay far above what oshirase sends.
func BenchmarkSink(b *testing.B) {
	sink, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	body := []byte("Subject: x\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n", 150))
	b.SetParallelism(1)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c, err := smtp.Dial(sink.Addr())
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		for pb.Next() {
			if err := c.SendMail("n@example.jp", []string{"a@example.jp"}, strings.NewReader(string(body))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}
