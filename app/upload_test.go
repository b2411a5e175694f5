package app_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/ingest"
	"github.com/oshirase/oshirase/notice"
)

// stalling yields its text, then fails as a stalled connection does.
type stalling struct {
	r   io.Reader
	err error
}

type timeoutErr struct{}

func (timeoutErr) Error() string { return "i/o timeout" }
func (timeoutErr) Timeout() bool { return true }

func (s *stalling) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == io.EOF {
		return n, s.err
	}
	return n, err
}

// csvRows is a CSV upload of n valid rows.
func csvRows(n int) string {
	var b strings.Builder
	b.WriteString("email,name\n")
	for i := range n {
		fmt.Fprintf(&b, "u%d@example.jp,Name %d\n", i, i)
	}
	return b.String()
}

// TestUpload: an upload through the application alone (any io.Reader: the
// API's body, a file) — its answer, and each way it can end short, as one
// typed error carrying the answer so far.
func TestUpload(t *testing.T) {
	f := newFixture(t, app.Limits{})
	ctx := context.Background()
	csv := app.UploadOptions{Format: ingest.CSV}

	c, _ := f.draft(t, ctx)
	ans, err := f.app.Upload(ctx, c.ID, strings.NewReader(csvRows(3)+"bad-address,x\nu0@example.jp,again\n"), csv)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	if ans.Accepted != 3 || ans.RejectedCount != 2 || ans.Total != 3 || ans.StoredThroughLine != 6 || ans.Incomplete != nil {
		t.Errorf("answer %+v, want 3 accepted, 2 rejected, through line 6", ans)
	}

	for _, tc := range []struct {
		name    string
		in      io.Reader
		kind    app.Kind
		code    string
		through int
	}{
		{"stalled", &stalling{strings.NewReader(csvRows(5000)), timeoutErr{}}, app.Timeout, "upload_stalled", 5001},
		{"too large", &stalling{strings.NewReader(csvRows(6000)), &app.TooLargeError{Limit: 1 << 10}}, app.TooLarge, "too_large", 6001},
		{"broke off", &stalling{strings.NewReader(csvRows(5000)), io.ErrUnexpectedEOF}, app.BadRequest, "incomplete_upload", 5001},
		{"junk", strings.NewReader("email,name\n" + strings.Repeat("x,y\n", 150)), app.Invalid, "too_many_rejections", 101},
	} {
		c, _ := f.draft(t, ctx)
		ans, err := f.app.Upload(ctx, c.ID, tc.in, csv)
		wantErr(t, tc.name, err, tc.kind, tc.code)
		var e *app.Error
		if !errors.As(err, &e) || e.Details != ans || ans == nil || ans.Incomplete == nil {
			t.Errorf("%s: the error does not carry the answer so far: %#v", tc.name, err)
			continue
		}
		if ans.StoredThroughLine != tc.through || ans.Incomplete.Line != tc.through {
			t.Errorf("%s: stored through line %d (incomplete %+v), want %d", tc.name, ans.StoredThroughLine, ans.Incomplete, tc.through)
		}
		got, _ := f.store.Campaign(ctx, c.ID)
		if got.LastUpload == nil || got.LastUpload.State == notice.UploadComplete || got.LastUpload.StoredThroughLine != tc.through {
			t.Errorf("%s: last_upload %+v", tc.name, got.LastUpload)
		}
	}

	started, _ := f.draft(t, ctx, notice.Recipient{Email: "s@example.jp"})
	if _, err := f.app.Start(ctx, started.ID, nil); err != nil {
		t.Fatal(err)
	}
	_, err = f.app.Upload(ctx, started.ID, strings.NewReader(csvRows(1)), csv)
	wantErr(t, "upload to a started campaign", err, app.Conflict, "not_draft")
	_, err = f.app.Upload(ctx, "nosuch", strings.NewReader(csvRows(1)), csv)
	wantErr(t, "upload to no campaign", err, app.NotFound, "not_found")
}
