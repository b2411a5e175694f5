package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"mime"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/oshirase/oshirase/auth"
	"github.com/oshirase/oshirase/config"
	"github.com/oshirase/oshirase/internal/apiclient"
	"github.com/oshirase/oshirase/internal/sample"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/smtpsink"
)

func apiHashKey(k string) string { return auth.HashKey(k) }

// demo runs a whole campaign on this machine: an embedded Redis and an
// in-process SMTP sink unless REDIS_URL / SMTP_URL point elsewhere.
func demo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("oshirase demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 1500, "number of synthetic recipients")
	out := fs.String("out", "oshirase-demo", "folder for the received .eml files (embedded SMTP sink only)")
	cfg, _, err := config.Load(fs, args, nil)
	if err != nil {
		return err
	}
	if *n < 1 {
		return fmt.Errorf("-n must be at least 1")
	}
	log, err := newLogger(cfg, stderr, "text")
	if err != nil {
		return err
	}
	if cfg.LogLevel == "info" && os.Getenv("LOG_LEVEL") == "" {
		// The progress line is the demo's output; warnings and errors still show.
		log, _ = newLogger(&config.Config{LogLevel: "warn", LogFormat: cfg.LogFormat}, stderr, "text")
	}

	embedded := os.Getenv("REDIS_URL") == "" && !flagSet(fs, "redis-url")
	if embedded {
		m := miniredis.NewMiniRedis()
		m.ClockTTL(true) // asynq relies on TTLs that expire
		if err := m.Start(); err != nil {
			return fmt.Errorf("embedded redis: %w", err)
		}
		defer m.Close()
		cfg.RedisURL = "redis://" + m.Addr() + "/0"
		fmt.Fprintf(stdout, "Redis:  embedded (miniredis at %s)\n", m.Addr())
	} else {
		fmt.Fprintf(stdout, "Redis:  %s\n", config.Redact(cfg.RedisURL))
	}
	var sink *smtpsink.Sink
	emlDir := ""
	if os.Getenv("SMTP_URL") == "" && !flagSet(fs, "smtp-url") {
		emlDir, err = filepath.Abs(filepath.Join(*out, time.Now().Format("20060102-150405")))
		if err != nil {
			return err
		}
		if err := os.MkdirAll(emlDir, 0o755); err != nil {
			return fmt.Errorf("eml folder: %w", err)
		}
		sink, err = smtpsink.Start(smtpsink.Options{Dir: emlDir})
		if err != nil {
			return fmt.Errorf("embedded smtp sink: %w", err)
		}
		defer sink.Close()
		cfg.SMTPURL = sink.URL()
		fmt.Fprintf(stdout, "SMTP:   embedded sink at %s, writing .eml files to %s\n", sink.Addr(), emlDir)
	} else {
		fmt.Fprintf(stdout, "SMTP:   %s\n", config.Redact(cfg.SMTPURL))
	}

	key := randomKey()
	cfg.APIKeys = "demo:admin:" + key
	cfg.ListenAddr = "127.0.0.1:0"
	// The embedded Redis is the process' own memory, gone with it: no
	// settings to check. Another Redis is checked like serve's.
	svc, err := service.New(ctx, cfg, log, service.Options{API: true, Worker: true, EmbeddedRedis: embedded})
	if err != nil {
		return err
	}
	defer svc.Close()
	if err := svc.Listen(); err != nil {
		return err
	}
	runCtx, stopSvc := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	defer func() { stopSvc(); <-done }()

	c := &apiclient.Client{Base: "http://" + svc.Addr(), Key: key}
	fmt.Fprintf(stdout, "API:    http://%s (admin key for this run: %s)\n\n", svc.Addr(), key)

	var camp notice.Campaign
	if err := c.Do(ctx, "POST", "/v1/campaigns", "application/json", bytes.NewReader(sample.Campaign("カード情報流出のお詫び (demo)")), &camp); err != nil {
		return fmt.Errorf("create campaign: %w", err)
	}
	var up struct {
		Accepted int `json:"accepted"`
		Rejected int `json:"rejected_count"`
	}
	if err := c.Do(ctx, "POST", "/v1/campaigns/"+camp.ID+"/recipients", "text/csv", bytes.NewReader(demoCSV(*n)), &up); err != nil {
		return fmt.Errorf("upload recipients: %w", err)
	}
	fmt.Fprintf(stdout, "Campaign %s %q: %d recipients accepted, %d rejected\n", camp.ID, camp.Name, up.Accepted, up.Rejected)
	start := time.Now()
	if err := c.Do(ctx, "POST", "/v1/campaigns/"+camp.ID+"/start", "", nil, &camp); err != nil {
		return fmt.Errorf("start campaign: %w", err)
	}
	// On a terminal the progress line rewrites itself; into a file or pipe
	// it is a line a second.
	interactive := isTerminal(stdout)
	every, eol := 200*time.Millisecond, "\r"
	if !interactive {
		every, eol = time.Second, "\n"
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout)
			return ctx.Err()
		case <-tick.C:
		}
		if err := c.Do(ctx, "GET", "/v1/campaigns/"+camp.ID, "", nil, &camp); err != nil {
			return err
		}
		k := camp.Counts
		el := time.Since(start).Seconds()
		if camp.FinishedAt != nil && camp.StartedAt != nil {
			// Done between two polls: the rate is the campaign's own.
			el = camp.FinishedAt.Sub(*camp.StartedAt).Seconds()
		}
		if interactive {
			fmt.Fprint(stdout, eol)
		}
		fmt.Fprintf(stdout, "%-8s sent %6d / %d  failed %d  retrying %d  %6.0f msg/s  %5.1fs ",
			camp.Status, k.Sent, k.Total, k.Failed, k.Retrying, float64(k.Sent)/el, el)
		if !interactive {
			fmt.Fprint(stdout, eol)
		}
		if camp.Status == notice.CampaignDone || camp.Status == notice.CampaignCancelled {
			break
		}
	}
	elapsed := camp.FinishedAt.Sub(*camp.StartedAt)
	if elapsed <= 0 {
		elapsed = time.Since(start)
	}
	k := camp.Counts
	fmt.Fprintf(stdout, "\nDone: %d sent, %d failed, %d suppressed in %s — %.0f msg/s\n",
		k.Sent, k.Failed, k.Suppressed, elapsed.Round(time.Millisecond), float64(k.Sent)/elapsed.Seconds())
	if emlDir != "" {
		fmt.Fprintf(stdout, "Messages: %d .eml files in %s\n", countFiles(emlDir), emlDir)
		if subj, file := japaneseSubject(emlDir); subj != "" {
			fmt.Fprintf(stdout, "A Japanese notice (%s):\n  Subject: %s\n", filepath.Base(file), subj)
		}
		// The proof of who was told what and when, as an admin downloads it.
		report := emlDir + "-report.csv"
		if err := writeReport(ctx, c, camp.ID, report); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Delivery report: %s (GET /v1/campaigns/%s/report)\n", report, camp.ID)
	}
	return nil
}

func writeReport(ctx context.Context, c *apiclient.Client, id, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("delivery report: %w", err)
	}
	if err := c.Download(ctx, "/v1/campaigns/"+id+"/report?reason=demo", f); err != nil {
		f.Close()
		return fmt.Errorf("delivery report: %w", err)
	}
	return f.Close()
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func flagSet(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			found = true
		}
	})
	return found
}

func randomKey() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

var (
	jaFamily = []string{"佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村", "小林", "加藤"}
	jaGiven  = []string{"太郎", "花子", "一郎", "美咲", "健太", "陽菜", "翔", "さくら", "大輔", "結衣"}
	enFamily = []string{"Smith", "Johnson", "Brown", "Taylor", "Wilson", "Davies", "Evans", "Thomas", "Roberts", "Walker"}
	enGiven  = []string{"Emma", "Oliver", "Ava", "James", "Mia", "Noah", "Grace", "Liam", "Chloe", "Ethan"}
	brands   = []string{"VISA", "Mastercard", "JCB", "American Express"}
)

// demoCSV makes n made-up recipients: about 70% Japanese, the rest English,
// all at example.jp / example.com (reserved domains that reach nobody).
func demoCSV(n int) []byte {
	r := mrand.New(mrand.NewPCG(2019, 15370))
	var b bytes.Buffer
	b.WriteString("email,name,locale,customer_id,card_brand,card_last4\n")
	for i := 1; i <= n; i++ {
		var name, locale, addr string
		if r.IntN(10) < 7 {
			name = jaFamily[r.IntN(len(jaFamily))] + " " + jaGiven[r.IntN(len(jaGiven))]
			locale, addr = "ja", fmt.Sprintf("customer%05d@example.jp", i)
		} else {
			name = enGiven[r.IntN(len(enGiven))] + " " + enFamily[r.IntN(len(enFamily))]
			locale, addr = "en", fmt.Sprintf("customer%05d@example.com", i)
		}
		fmt.Fprintf(&b, "%s,%s,%s,C%07d,%s,%04d\n", addr, name, locale, i, brands[r.IntN(len(brands))], r.IntN(10000))
	}
	return b.Bytes()
}

func countFiles(dir string) int {
	es, _ := os.ReadDir(dir)
	return len(es)
}

// japaneseSubject decodes the Subject of the first Japanese notice received.
func japaneseSubject(dir string) (string, string) {
	es, _ := os.ReadDir(dir)
	dec := new(mime.WordDecoder)
	for _, e := range es {
		if !strings.Contains(e.Name(), "example.jp") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		m, err := mail.ReadMessage(f)
		if err != nil {
			f.Close()
			continue
		}
		s, err := dec.DecodeHeader(m.Header.Get("Subject"))
		f.Close()
		if err == nil {
			return s, p
		}
	}
	return "", ""
}
