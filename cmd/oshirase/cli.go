package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// The client commands drive a running oshirase through its HTTP API, as a
// company's script would: campaign, recipient and webhook. Each takes
// --url/--key (OSHIRASE_URL, OSHIRASE_KEY), --timeout and --retries.
// Results go to stdout (ids alone where a script wants one, --json for the
// API's answer as is); progress, retries and errors to stderr.

const campaignUsage = `Usage: oshirase campaign <command> [flags] [arguments]

Commands:
  create --data FILE [--name NAME]   create a draft from a JSON file (POST /v1/campaigns); prints its id
  upload ID FILE                     upload recipients (.csv, .json, .gz), with a progress bar on a terminal
  start ID [--at TIME]               start sending now, or at an RFC 3339 time
  status ID [--watch]                counts, rate and ETA; --watch repeats until the campaign ends
  pause ID | resume ID | cancel ID
  report ID [-o FILE]                the delivery report (CSV) to stdout or FILE

Every command takes --url (OSHIRASE_URL), --key (OSHIRASE_KEY), --timeout,
--retries and --json. Exit codes: 0 ok, 1 refused by the API, 2 bad
command line, 3 API unreachable or failing, 4 watched campaign cancelled.
`

const recipientUsage = `Usage: oshirase recipient <command> [flags] [arguments]

Commands:
  find EMAIL                               every notice sent to EMAIL (support key)
  resend CAMPAIGN RECIPIENT --reason TEXT  send a recipient's notice again [--email ADDR] [--override-suppression]
`

const webhookUsage = `Usage: oshirase webhook <command> [flags] [arguments]

Commands:
  add --endpoint URL [--events LIST] [--campaign ID] [--include-address]
                                   register an endpoint; prints its id and secret (shown once)
  list                             the endpoints
  delete ID
  rotate ID                        a new secret (the old one signs too for WEBHOOK_ROTATE_OVERLAP)
  deliveries ID [--limit N]        the endpoint's delivery log, newest first
  redeliver ID DELIVERY_ID         send a logged delivery again
`

// cmdSet is a client command's flags and the client they make.
type cmdSet struct {
	fs     *flag.FlagSet
	client func(io.Writer) (*client, error)
	json   *bool
}

func newCmd(name string, stderr io.Writer, defTimeout time.Duration) *cmdSet {
	fs := flag.NewFlagSet("oshirase "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return &cmdSet{fs: fs, client: clientFlags(fs, defTimeout), json: fs.Bool("json", false, "print the API's answer as JSON")}
}

// parse reads flags and arguments in any order (flag stops at the first
// argument; people write `upload ID FILE --timeout 5m`) and checks the
// argument count.
func (c *cmdSet) parse(args []string, want int, names string) ([]string, error) {
	var pos []string
	for {
		if err := c.fs.Parse(args); err != nil {
			return nil, err
		}
		args = c.fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			pos = append(pos, args[1:]...)
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != want {
		return nil, usageErr("want %s, got %d argument(s)", names, len(pos))
	}
	return pos, nil
}

// call makes the client and sends req; with --json it prints the answer
// as it came and reports done.
func (c *cmdSet) call(ctx context.Context, stdout, stderr io.Writer, req request) (json.RawMessage, bool, error) {
	cl, err := c.client(stderr)
	if err != nil {
		return nil, false, err
	}
	var raw json.RawMessage
	if err := cl.do(ctx, req, &raw); err != nil {
		return nil, false, err
	}
	if *c.json {
		stdout.Write(raw)
		fmt.Fprintln(stdout)
		return raw, true, nil
	}
	return raw, false, nil
}

func dispatch(ctx context.Context, args []string, usage string, cmds map[string]func(context.Context, []string, io.Writer, io.Writer) error, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return usageErr("no command")
		}
		return nil
	}
	fn, ok := cmds[args[0]]
	if !ok {
		fmt.Fprint(stderr, usage)
		return usageErr("unknown command %q", args[0])
	}
	return fn(ctx, args[1:], stdout, stderr)
}

func campaignCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	move := func(action string) func(context.Context, []string, io.Writer, io.Writer) error {
		return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			return campaignMove(ctx, action, args, stdout, stderr)
		}
	}
	return dispatch(ctx, args, campaignUsage, map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"create": campaignCreate, "upload": campaignUpload, "start": campaignStart, "status": campaignStatus,
		"pause": move("pause"), "resume": move("resume"), "cancel": move("cancel"), "report": campaignReport,
	}, stdout, stderr)
}

// campaignView is what the CLI reads of GET /v1/campaigns/{id}.
type campaignView struct {
	ID           string     `json:"id"`
	Name         string     `json:"name"`
	Status       string     `json:"status"`
	PausedReason string     `json:"paused_reason"`
	StartedAt    *time.Time `json:"started_at"`
	FinishedAt   *time.Time `json:"finished_at"`
	ScheduledAt  *time.Time `json:"scheduled_at"`
	Counts       struct {
		Total, Pending, Sending, Retrying, Sent, Failed, Suppressed, Cancelled, Bounced, Complained int64
		PossibleDuplicate                                                                           int64 `json:"possible_duplicate"`
	} `json:"counts"`
	Progress *struct {
		Done          int64    `json:"done"`
		RatePerSecond float64  `json:"rate_per_second"`
		ETASeconds    *float64 `json:"eta_seconds"`
	} `json:"progress"`
}

func campaignCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCmd("campaign create", stderr, time.Minute)
	data := c.fs.String("data", "", "the campaign as JSON (POST /v1/campaigns body; see examples/incident.json); - for stdin")
	name := c.fs.String("name", "", "the campaign's name (overrides the file's)")
	if _, err := c.parse(args, 0, "no arguments"); err != nil {
		return err
	}
	if *data == "" {
		return usageErr("--data FILE is required (see examples/incident.json)")
	}
	var b []byte
	var err error
	if *data == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(*data)
	}
	if err != nil {
		return fmt.Errorf("--data: %w", err)
	}
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		return &exitError{exitUsage, fmt.Errorf("--data %s: not a JSON object: %w", *data, err)}
	}
	if *name != "" {
		body["name"] = *name
		b, _ = json.Marshal(body)
	}
	raw, done, err := c.call(ctx, stdout, stderr, request{method: "POST", path: "/v1/campaigns", ctype: "application/json", body: jsonBody(b)})
	if err != nil || done {
		return err
	}
	var ans map[string]any
	json.Unmarshal(raw, &ans)
	fmt.Fprintf(stderr, "created draft campaign %v (%v)\n", ans["id"], ans["name"])
	fmt.Fprintln(stdout, ans["id"])
	return nil
}

// uploadAnswer is what the CLI shows of an upload's answer.
type uploadAnswer struct {
	UploadID      string `json:"upload_id"`
	Accepted      int    `json:"accepted"`
	RejectedCount int    `json:"rejected_count"`
	Rejected      []struct {
		Line  int    `json:"line"`
		Field string `json:"field"`
		Error string `json:"error"`
	} `json:"rejected"`
	RejectionsURL     string `json:"rejections_url"`
	Lines             int    `json:"lines"`
	StoredThroughLine int    `json:"stored_through_line"`
	WarningCount      int    `json:"warning_count"`
	Total             int64  `json:"total_recipients"`
	Incomplete        *struct {
		Line  int    `json:"line"`
		Error string `json:"error"`
	} `json:"incomplete"`
}

func campaignUpload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCmd("campaign upload", stderr, 0)
	pos, err := c.parse(args, 2, "CAMPAIGN_ID FILE")
	if err != nil {
		return err
	}
	id, file := pos[0], pos[1]
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	name, hdr := strings.ToLower(file), map[string]string{}
	if strings.HasSuffix(name, ".gz") {
		hdr["Content-Encoding"] = "gzip"
		name = strings.TrimSuffix(name, ".gz")
	}
	ctype := "text/csv"
	switch filepath.Ext(name) {
	case ".json":
		ctype = "application/json"
	case ".csv", ".txt":
	default:
		return usageErr("%s: want a .csv or .json file (optionally .gz)", file)
	}
	cl, err := c.client(stderr)
	if err != nil {
		return err
	}
	bar := uploadBar(stderr, st.Size(), file)
	open := func() (io.ReadCloser, error) {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		var r io.Reader = f
		if bar != nil {
			bar.Reset()
			r = io.TeeReader(f, bar)
		}
		return io.NopCloser(r), nil
	}
	var ans uploadAnswer
	var raw json.RawMessage
	err = cl.do(ctx, request{method: "POST", path: "/v1/campaigns/" + url.PathEscape(id) + "/recipients", ctype: ctype, header: hdr, body: open}, &raw)
	if bar != nil {
		bar.Finish()
		fmt.Fprintln(stderr)
	}
	if err != nil {
		return err
	}
	if *c.json {
		stdout.Write(raw)
		return nil
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return fmt.Errorf("upload answer: %w", err)
	}
	fmt.Fprintf(stdout, "upload %s: %d accepted, %d rejected, %d lines; campaign %s now has %d recipients\n",
		ans.UploadID, ans.Accepted, ans.RejectedCount, ans.Lines, id, ans.Total)
	for i, r := range ans.Rejected {
		if i == 10 {
			fmt.Fprintf(stdout, "  … %d more: GET %s\n", ans.RejectedCount-10, ans.RejectionsURL)
			break
		}
		fmt.Fprintf(stdout, "  line %d: %s: %s\n", r.Line, r.Field, r.Error)
	}
	if ans.WarningCount > 0 {
		fmt.Fprintf(stdout, "  %d rows changed (full-width characters, IDN domains); --json shows them\n", ans.WarningCount)
	}
	return nil
}

// uploadBar is a progress bar on stderr when stderr is a terminal (never
// in a pipe or a log), else nil.
func uploadBar(stderr io.Writer, size int64, name string) *progressbar.ProgressBar {
	f, ok := stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return progressbar.NewOptions64(size, progressbar.OptionSetWriter(stderr), progressbar.OptionShowBytes(true),
		progressbar.OptionSetDescription("uploading "+filepath.Base(name)), progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionShowCount(), progressbar.OptionSpinnerType(14))
}

func campaignStart(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCmd("campaign start", stderr, time.Minute)
	at := c.fs.String("at", "", "start at this RFC 3339 time instead of now (2026-12-02T09:00:00+09:00)")
	pos, err := c.parse(args, 1, "CAMPAIGN_ID")
	if err != nil {
		return err
	}
	body := []byte(`{}`)
	if *at != "" {
		if _, err := time.Parse(time.RFC3339, *at); err != nil {
			return usageErr("--at %q: want an RFC 3339 time such as 2026-12-02T09:00:00+09:00", *at)
		}
		body, _ = json.Marshal(map[string]string{"at": *at})
	}
	cl, err := c.client(stderr)
	if err != nil {
		return err
	}
	var ans campaignView
	var raw json.RawMessage
	if err := cl.do(ctx, request{method: "POST", path: "/v1/campaigns/" + url.PathEscape(pos[0]) + "/start", ctype: "application/json", body: jsonBody(body)}, &raw); err != nil {
		return err
	}
	if *c.json {
		stdout.Write(raw)
		return nil
	}
	json.Unmarshal(raw, &ans)
	if ans.ScheduledAt != nil {
		fmt.Fprintf(stdout, "campaign %s scheduled for %s (%d recipients)\n", ans.ID, ans.ScheduledAt.Format(time.RFC3339), ans.Counts.Total)
	} else {
		fmt.Fprintf(stdout, "campaign %s %s (%d recipients); watch it with: oshirase campaign status %s --watch\n", ans.ID, ans.Status, ans.Counts.Total, ans.ID)
	}
	return nil
}

func campaignMove(ctx context.Context, action string, args []string, stdout, stderr io.Writer) error {
	c := newCmd("campaign "+action, stderr, time.Minute)
	pos, err := c.parse(args, 1, "CAMPAIGN_ID")
	if err != nil {
		return err
	}
	raw, done, err := c.call(ctx, stdout, stderr, request{method: "POST", path: "/v1/campaigns/" + url.PathEscape(pos[0]) + "/" + action})
	if err != nil || done {
		return err
	}
	var ans campaignView
	json.Unmarshal(raw, &ans)
	fmt.Fprintf(stdout, "campaign %s %s\n", pos[0], ans.Status)
	return nil
}

func campaignStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCmd("campaign status", stderr, time.Minute)
	watch := c.fs.Bool("watch", false, "repeat until the campaign is done or cancelled")
	every := c.fs.Duration("interval", 2*time.Second, "--watch: time between reads")
	pos, err := c.parse(args, 1, "CAMPAIGN_ID")
	if err != nil {
		return err
	}
	if *every < 100*time.Millisecond {
		return usageErr("--interval %s: at least 100ms", *every)
	}
	cl, err := c.client(stderr)
	if err != nil {
		return err
	}
	tty := false
	if f, ok := stdout.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	last := ""
	for {
		var raw json.RawMessage
		if err := cl.do(ctx, request{method: "GET", path: "/v1/campaigns/" + url.PathEscape(pos[0])}, &raw); err != nil {
			return err
		}
		var cv campaignView
		if err := json.Unmarshal(raw, &cv); err != nil {
			return fmt.Errorf("campaign answer: %w", err)
		}
		ended := cv.Status == "done" || cv.Status == "cancelled"
		switch line := statusLine(&cv); {
		case *c.json:
			stdout.Write(raw)
		case tty && *watch:
			fmt.Fprintf(stdout, "\r\033[K%s", line)
			if ended {
				fmt.Fprintln(stdout)
			}
		case line != last:
			fmt.Fprintln(stdout, line)
			last = line
		}
		if !*watch || ended {
			if *watch && cv.Status == "cancelled" {
				return &exitError{exitNotDone, fmt.Errorf("campaign %s was cancelled", cv.ID)}
			}
			return nil
		}
		if err := sleepCtx(ctx, *every); err != nil {
			return err
		}
	}
}

// statusLine is one line of a campaign's state: status, counts, and while
// it sends the rate and the time left.
func statusLine(c *campaignView) string {
	n := c.Counts
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", c.ID, c.Status)
	if c.PausedReason != "" {
		fmt.Fprintf(&b, " (%s)", c.PausedReason)
	}
	done := n.Sent + n.Failed + n.Suppressed + n.Cancelled + n.Bounced + n.Complained
	fmt.Fprintf(&b, "  %d/%d  sent %d  failed %d  suppressed %d", done, n.Total, n.Sent, n.Failed, n.Suppressed)
	if n.Bounced+n.Complained > 0 {
		fmt.Fprintf(&b, "  bounced %d  complained %d", n.Bounced, n.Complained)
	}
	if n.Cancelled > 0 {
		fmt.Fprintf(&b, "  cancelled %d", n.Cancelled)
	}
	if p := c.Progress; p != nil {
		fmt.Fprintf(&b, "  %.1f msg/s", p.RatePerSecond)
		if p.ETASeconds != nil {
			fmt.Fprintf(&b, "  ETA %s", (time.Duration(*p.ETASeconds) * time.Second).String())
		}
	}
	if c.StartedAt != nil && c.FinishedAt != nil {
		fmt.Fprintf(&b, "  in %s", c.FinishedAt.Sub(*c.StartedAt).Round(100*time.Millisecond))
	}
	return b.String()
}

func campaignReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCmd("campaign report", stderr, 0)
	out := c.fs.String("o", "", "write the report to this file (default: stdout)")
	bom := c.fs.Bool("bom", false, "start with a UTF-8 BOM (for Excel)")
	pos, err := c.parse(args, 1, "CAMPAIGN_ID")
	if err != nil {
		return err
	}
	cl, err := c.client(stderr)
	if err != nil {
		return err
	}
	path := "/v1/campaigns/" + url.PathEscape(pos[0]) + "/report"
	if *bom {
		path += "?bom=true"
	}
	// Retried only until the answer starts: a report cut off halfway is
	// an error, not appended to.
	resp, err := cl.send(ctx, request{method: "GET", path: path})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return cl.failure(resp.StatusCode, b)
	}
	w := stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		defer f.Close()
		w = f
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return &exitError{exitUnavailable, fmt.Errorf("report: cut off after %d bytes: %w", n, err)}
	}
	if *out != "" {
		if err := w.(*os.File).Close(); err != nil {
			return fmt.Errorf("report: %w", err)
		}
		fmt.Fprintf(stderr, "delivery report of %s: %s (%d bytes)\n", pos[0], *out, n)
	}
	return nil
}

func recipientCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, args, recipientUsage, map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"find": recipientFind, "resend": recipientResend,
	}, stdout, stderr)
}

func recipientFind(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCmd("recipient find", stderr, time.Minute)
	pos, err := c.parse(args, 1, "EMAIL")
	if err != nil {
		return err
	}
	raw, done, err := c.call(ctx, stdout, stderr, request{method: "GET", path: "/v1/recipients?email=" + url.QueryEscape(pos[0])})
	if err != nil || done {
		return err
	}
	var ans struct {
		Email   string `json:"email"`
		Notices []struct {
			Campaign struct {
				ID, Name string
			} `json:"campaign"`
			ID         int64      `json:"id"`
			CustomerID string     `json:"customer_id"`
			Status     string     `json:"status"`
			SentAt     *time.Time `json:"sent_at"`
		} `json:"notices"`
		Suppression *struct {
			Reason string `json:"reason"`
		} `json:"suppression"`
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return fmt.Errorf("look-up answer: %w", err)
	}
	if len(ans.Notices) == 0 {
		fmt.Fprintf(stdout, "no notice was addressed to %s\n", ans.Email)
	} else {
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CAMPAIGN\tNAME\tRECIPIENT\tCUSTOMER\tSTATUS\tSENT")
		for _, n := range ans.Notices {
			sent := "-"
			if n.SentAt != nil {
				sent = n.SentAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", n.Campaign.ID, n.Campaign.Name, n.ID, n.CustomerID, n.Status, sent)
		}
		tw.Flush()
	}
	if ans.Suppression != nil {
		fmt.Fprintf(stdout, "%s is suppressed (%s)\n", ans.Email, ans.Suppression.Reason)
	}
	return nil
}

func recipientResend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCmd("recipient resend", stderr, time.Minute)
	reason := c.fs.String("reason", "", "why (required; audited)")
	email := c.fs.String("email", "", "a corrected address (default: the recipient's own)")
	override := c.fs.Bool("override-suppression", false, "send although the address is suppressed")
	pos, err := c.parse(args, 2, "CAMPAIGN_ID RECIPIENT_ID")
	if err != nil {
		return err
	}
	if _, err := strconv.ParseInt(pos[1], 10, 64); err != nil {
		return usageErr("RECIPIENT_ID %q: want the recipient's number (oshirase recipient find shows it)", pos[1])
	}
	cl, err := c.client(stderr)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]any{"reason": *reason, "email": *email, "override_suppression": *override})
	var raw json.RawMessage
	if err := cl.do(ctx, request{method: "POST", path: "/v1/campaigns/" + url.PathEscape(pos[0]) + "/recipients/" + pos[1] + "/resend",
		ctype: "application/json", body: jsonBody(body)}, &raw); err != nil {
		return err
	}
	if *c.json {
		stdout.Write(raw)
		return nil
	}
	var ans struct {
		Resend struct {
			N      int    `json:"n"`
			Email  string `json:"email"`
			Status string `json:"status"`
		} `json:"resend"`
	}
	json.Unmarshal(raw, &ans)
	fmt.Fprintf(stdout, "resend #%d of recipient %s in %s to %s: %s\n", ans.Resend.N, pos[1], pos[0], ans.Resend.Email, ans.Resend.Status)
	return nil
}

func webhookCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, args, webhookUsage, map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"add": webhookAdd, "list": webhookList, "delete": webhookDelete, "rotate": webhookRotate,
		"deliveries": webhookDeliveries, "redeliver": webhookRedeliver,
	}, stdout, stderr)
}

type webhookView struct {
	ID                  string     `json:"id"`
	URL                 string     `json:"url"`
	Events              []string   `json:"events"`
	CampaignID          string     `json:"campaign_id"`
	DisabledAt          *time.Time `json:"disabled_at"`
	DisabledReason      string     `json:"disabled_reason"`
	PreviousSecretUntil *time.Time `json:"previous_secret_until"`
	Secret              string     `json:"secret"`
}

func webhookAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCmd("webhook add", stderr, time.Minute)
	endpoint := c.fs.String("endpoint", "", "the receiver's URL (https://…)")
	events := c.fs.String("events", "*", "comma-separated event types, or * for all")
	campaign := c.fs.String("campaign", "", "only this campaign's events")
	addr := c.fs.Bool("include-address", false, "put recipients' addresses in the events")
	if _, err := c.parse(args, 0, "no arguments"); err != nil {
		return err
	}
	if *endpoint == "" {
		return usageErr("--endpoint URL is required")
	}
	var evs []string
	for _, e := range strings.Split(*events, ",") {
		if e = strings.TrimSpace(e); e != "" {
			evs = append(evs, e)
		}
	}
	body, _ := json.Marshal(map[string]any{"url": *endpoint, "events": evs, "campaign_id": *campaign, "include_address": *addr})
	return webhookCall(ctx, c, stdout, stderr, request{method: "POST", path: "/v1/webhooks", ctype: "application/json", body: jsonBody(body)})
}

func webhookRotate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCmd("webhook rotate", stderr, time.Minute)
	pos, err := c.parse(args, 1, "WEBHOOK_ID")
	if err != nil {
		return err
	}
	return webhookCall(ctx, c, stdout, stderr, request{method: "POST", path: "/v1/webhooks/" + url.PathEscape(pos[0]) + "/rotate"})
}

// webhookCall creates or rotates: the answer carries the secret, shown
// this once.
func webhookCall(ctx context.Context, c *cmdSet, stdout, stderr io.Writer, req request) error {
	raw, done, err := c.call(ctx, stdout, stderr, req)
	if err != nil || done {
		return err
	}
	var v webhookView
	json.Unmarshal(raw, &v)
	fmt.Fprintf(stdout, "id:     %s\nurl:    %s\nevents: %s\nsecret: %s\n", v.ID, v.URL, strings.Join(v.Events, ","), v.Secret)
	if v.PreviousSecretUntil != nil {
		fmt.Fprintf(stdout, "the previous secret signs too until %s\n", v.PreviousSecretUntil.Format(time.RFC3339))
	}
	fmt.Fprintln(stderr, "keep the secret now: it is not shown again")
	return nil
}

func webhookList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCmd("webhook list", stderr, time.Minute)
	if _, err := c.parse(args, 0, "no arguments"); err != nil {
		return err
	}
	raw, done, err := c.call(ctx, stdout, stderr, request{method: "GET", path: "/v1/webhooks"})
	if err != nil || done {
		return err
	}
	var ans struct{ Webhooks []webhookView }
	json.Unmarshal(raw, &ans)
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tURL\tEVENTS\tCAMPAIGN\tSTATE")
	for _, w := range ans.Webhooks {
		state := "active"
		if w.DisabledAt != nil {
			state = "disabled: " + w.DisabledReason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", w.ID, w.URL, strings.Join(w.Events, ","), cmpOr(w.CampaignID, "*"), state)
	}
	return tw.Flush()
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func webhookDelete(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCmd("webhook delete", stderr, time.Minute)
	pos, err := c.parse(args, 1, "WEBHOOK_ID")
	if err != nil {
		return err
	}
	cl, err := c.client(stderr)
	if err != nil {
		return err
	}
	if err := cl.do(ctx, request{method: http.MethodDelete, path: "/v1/webhooks/" + url.PathEscape(pos[0])}, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "webhook %s deleted\n", pos[0])
	return nil
}

func webhookDeliveries(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCmd("webhook deliveries", stderr, time.Minute)
	limit := c.fs.Int("limit", 50, "attempts to show (newest first; at most 1000)")
	pos, err := c.parse(args, 1, "WEBHOOK_ID")
	if err != nil {
		return err
	}
	raw, done, err := c.call(ctx, stdout, stderr, request{method: "GET", path: "/v1/webhooks/" + url.PathEscape(pos[0]) + "/deliveries?limit=" + strconv.Itoa(*limit)})
	if err != nil || done {
		return err
	}
	var ans struct {
		Deliveries []struct {
			DeliveryID string    `json:"delivery_id"`
			Attempt    int       `json:"attempt"`
			Redelivery bool      `json:"redelivery"`
			At         time.Time `json:"at"`
			Events     int       `json:"events"`
			StatusCode int       `json:"status_code"`
			LatencyMS  int64     `json:"latency_ms"`
			Error      string    `json:"error"`
		} `json:"deliveries"`
	}
	json.Unmarshal(raw, &ans)
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AT\tDELIVERY\tATTEMPT\tEVENTS\tSTATUS\tLATENCY\tERROR")
	for _, d := range ans.Deliveries {
		att := strconv.Itoa(d.Attempt)
		if d.Redelivery {
			att += " (redelivery)"
		}
		code := "-"
		if d.StatusCode != 0 {
			code = strconv.Itoa(d.StatusCode)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%dms\t%s\n", d.At.Local().Format(time.DateTime), d.DeliveryID, att, d.Events, code, d.LatencyMS, d.Error)
	}
	return tw.Flush()
}

func webhookRedeliver(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCmd("webhook redeliver", stderr, time.Minute)
	pos, err := c.parse(args, 2, "WEBHOOK_ID DELIVERY_ID")
	if err != nil {
		return err
	}
	cl, err := c.client(stderr)
	if err != nil {
		return err
	}
	if err := cl.do(ctx, request{method: "POST", path: "/v1/webhooks/" + url.PathEscape(pos[0]) + "/deliveries/" + url.PathEscape(pos[1]) + "/redeliver"}, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "delivery %s queued again to %s\n", pos[1], pos[0])
	return nil
}
