package main

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Exit codes of the client commands (campaign, recipient, webhook); see
// docs/cli.md.
const (
	exitOK          = 0
	exitRefused     = 1 // the API refused the request (4xx), or another error
	exitUsage       = 2 // bad command line
	exitUnavailable = 3 // the API could not be reached, or kept failing (5xx), after the retries
	exitNotDone     = 4 // status --watch: the campaign ended cancelled, not done
)

// exitError carries a client command's exit code to run.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, a ...any) error {
	return &exitError{exitUsage, fmt.Errorf(format, a...)}
}

// apiError is an error answer of the API ({"error":{code,message,details}}).
type apiError struct {
	Status  int
	Code    string       `json:"code"`
	Message string       `json:"message"`
	Details []fieldError `json:"-"`
}

type fieldError struct {
	Field string `json:"field"`
	Error string `json:"error"`
}

// Error is the API's message, then one line per field it names.
func (e *apiError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s", e.Status, http.StatusText(e.Status))
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	for _, d := range e.Details {
		fmt.Fprintf(&b, "\n  %s: %s", d.Field, d.Error)
	}
	return b.String()
}

func decodeAPIError(status int, body []byte) *apiError {
	var env struct {
		Error struct {
			Code    string          `json:"code"`
			Message string          `json:"message"`
			Details json.RawMessage `json:"details"`
		} `json:"error"`
	}
	e := &apiError{Status: status}
	if json.Unmarshal(body, &env) != nil || env.Error.Message == "" {
		e.Message = strings.TrimSpace(string(body))
		if len(e.Message) > 500 {
			e.Message = e.Message[:500] + "…"
		}
		return e
	}
	e.Code, e.Message = env.Error.Code, env.Error.Message
	// details is a list of {field, error} for bad fields; other answers
	// put other things there (upload rejections, card findings): those
	// are shown by the command that expects them.
	json.Unmarshal(env.Error.Details, &e.Details)
	return e
}

// client calls the API as OSHIRASE_URL / OSHIRASE_KEY (or --url / --key)
// say. Each command invocation has one Idempotency-Key, sent with its
// POST and reused on every retry of it: a retry after a timeout or a 5xx
// gets the first answer back instead of doing the thing twice.
type client struct {
	base, key string
	timeout   time.Duration // per attempt; 0: none
	retries   int
	idemKey   string
	http      *http.Client
	stderr    io.Writer
	sleep     func(context.Context, time.Duration) error
}

// clientFlags adds the connection flags every client command takes.
func clientFlags(fs *flag.FlagSet, defTimeout time.Duration) func(io.Writer) (*client, error) {
	url := fs.String("url", envOr("OSHIRASE_URL", "http://127.0.0.1:8080"), "the API's base URL (OSHIRASE_URL)")
	key := fs.String("key", os.Getenv("OSHIRASE_KEY"), "API key (OSHIRASE_KEY)")
	timeout := fs.Duration("timeout", defTimeout, "time limit of one attempt (0: none)")
	retries := fs.Int("retries", 5, "retries after a network error, a timeout, 429 or 5xx (with backoff; same Idempotency-Key)")
	return func(stderr io.Writer) (*client, error) {
		if *key == "" {
			return nil, usageErr("no API key: set OSHIRASE_KEY or pass --key")
		}
		if !strings.HasPrefix(*url, "http://") && !strings.HasPrefix(*url, "https://") {
			return nil, usageErr("OSHIRASE_URL %q: want http://host:port or https://host", *url)
		}
		var b [16]byte
		crand.Read(b[:])
		return &client{base: strings.TrimRight(*url, "/"), key: *key, timeout: *timeout, retries: max(0, *retries),
			idemKey: "oshirase-cli-" + hex.EncodeToString(b[:]), http: &http.Client{}, stderr: stderr, sleep: sleepCtx}, nil
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// request is one API call; body (if any) is opened afresh for each attempt.
type request struct {
	method, path, ctype string
	header              map[string]string
	body                func() (io.ReadCloser, error)
}

func jsonBody(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// do sends req, retrying as the client's settings say, and returns the
// first answer that is neither a network error nor one that says "try
// again" (or the last one). A 2xx answer's body is decoded into out.
func (c *client) do(ctx context.Context, req request, out any) error {
	resp, err := c.send(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return &exitError{exitUnavailable, fmt.Errorf("%s %s: reading the answer: %w", req.method, req.path, err)}
	}
	if resp.StatusCode >= 300 {
		return c.failure(resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: the answer is not the JSON expected: %w", req.method, req.path, err)
		}
	}
	return nil
}

func (c *client) failure(status int, body []byte) error {
	e := decodeAPIError(status, body)
	if status >= 500 || status == http.StatusTooManyRequests {
		return &exitError{exitUnavailable, e}
	}
	return &exitError{exitRefused, e}
}

// send returns the answer to req with its body unread (the caller closes
// it), after the retries. Answers that say "try again" — 5xx, 429, 409
// because this key's first request still runs — and network errors are
// retried with exponential backoff and jitter (Retry-After honoured, up
// to a minute).
func (c *client) send(ctx context.Context, req request) (*http.Response, error) {
	var last error
	for attempt := 0; ; attempt++ {
		resp, err := c.attempt(ctx, req)
		var wait time.Duration
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			last = &exitError{exitUnavailable, fmt.Errorf("%s %s: %w", req.method, req.path, err)}
		case retryable(resp):
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			last = c.failure(resp.StatusCode, b)
			wait = retryAfter(resp.Header.Get("Retry-After"))
		default:
			return resp, nil
		}
		if attempt >= c.retries {
			return nil, last
		}
		if wait == 0 {
			d := min(8*time.Second, 500*time.Millisecond<<attempt)
			wait = d/2 + rand.N(d)
		}
		fmt.Fprintf(c.stderr, "oshirase: %v; retrying in %s (%d of %d)\n", firstLine(last), wait.Round(100*time.Millisecond), attempt+1, c.retries)
		if err := c.sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

func retryable(resp *http.Response) bool {
	switch s := resp.StatusCode; {
	case s >= 500 && s != http.StatusNotImplemented, s == http.StatusTooManyRequests:
		return true
	case s == http.StatusConflict:
		// Only the Idempotency-Key's "still running": other conflicts
		// (campaign not a draft) are answers.
		return resp.Header.Get("Retry-After") != ""
	}
	return false
}

func retryAfter(v string) time.Duration {
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 0 {
		return min(time.Duration(n)*time.Second, time.Minute)
	}
	return 0
}

// attempt sends req once, within the client's per-attempt time limit. The
// limit covers the whole answer: its body is read within it too.
func (c *client) attempt(ctx context.Context, req request) (*http.Response, error) {
	cancel := context.CancelFunc(func() {})
	if c.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
	}
	var body io.ReadCloser
	if req.body != nil {
		b, err := req.body()
		if err != nil {
			cancel()
			return nil, err
		}
		body = b
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, c.base+req.path, body)
	if err != nil {
		cancel()
		return nil, err
	}
	hr.Header.Set("Authorization", "Bearer "+c.key)
	hr.Header.Set("User-Agent", "oshirase-cli")
	if req.ctype != "" {
		hr.Header.Set("Content-Type", req.ctype)
	}
	if req.method == http.MethodPost {
		hr.Header.Set("Idempotency-Key", c.idemKey)
	}
	for k, v := range req.header {
		hr.Header.Set(k, v)
	}
	resp, err := c.http.Do(hr)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelBody{resp.Body, cancel}
	return resp, nil
}

// cancelBody ends an attempt's context when its answer is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// errorsAs is errors.As for a target type, as a value.
func errorsAs[T error](err error) (T, bool) {
	var t T
	ok := errors.As(err, &t)
	return t, ok
}
