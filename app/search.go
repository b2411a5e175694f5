package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/oshirase/oshirase/ingest"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/templates"
)

// Search result pages: SearchLimit notices by default, at most
// MaxSearchLimit, out of at most store.MaxSearchMatches.
const (
	SearchLimit    = 20
	MaxSearchLimit = 50
)

// SearchHit is a notice a search found and the fields it matched by.
type SearchHit struct {
	Notice
	Matched []string `json:"matched"`
}

// SearchResult is one page of what a search found.
type SearchResult struct {
	Query   string      `json:"q"`
	Notices []SearchHit `json:"notices"`
	// Total is how many recipients matched (at most
	// store.MaxSearchMatches; Truncated says there were more).
	Total      int    `json:"total"`
	Truncated  bool   `json:"truncated"`
	NextCursor string `json:"-"` // "" on the last page
}

// MarshalJSON writes next_cursor as every list does: null on the last page.
func (r SearchResult) MarshalJSON() ([]byte, error) {
	type plain SearchResult
	return json.Marshal(struct {
		plain
		NextCursor any `json:"next_cursor"`
	}{plain(r), cursorOrNull(r.NextCursor)})
}

// UnmarshalJSON reads what MarshalJSON writes (for Go clients).
func (r *SearchResult) UnmarshalJSON(b []byte) error {
	type plain SearchResult
	v := struct {
		*plain
		NextCursor *string `json:"next_cursor"`
	}{plain: (*plain)(r)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	r.NextCursor = ""
	if v.NextCursor != nil {
		r.NextCursor = *v.NextCursor
	}
	return nil
}

// Search finds notices by customer id, name, part of an address or phone
// number (store.Search: indexes only, no scan), and a whole address also
// through the address index, which knows campaigns indexed before the
// search index existed. Results are paged: cursor is the offset of the
// page in the (bounded) list of matches. A query too short or too long is
// BadRequest bad_query.
func (a *App) Search(ctx context.Context, q string, cursor, limit int) (*SearchResult, error) {
	q = strings.TrimSpace(q)
	found, err := a.store.Search(ctx, q)
	var qe *store.ErrQuery
	if errors.As(err, &qe) {
		return nil, &Error{Kind: BadRequest, Code: "bad_query", Msg: qe.Msg, Fields: []FieldError{{"q", qe.Msg}}, Err: err}
	}
	if err != nil {
		return nil, err
	}
	matches := found.Matches
	if addr := ingest.NormalizeEmail(q); addr != "" {
		refs, err := a.store.Lookup(ctx, addr)
		if err != nil {
			return nil, err
		}
		for _, ref := range refs {
			i := slices.IndexFunc(matches, func(m store.Match) bool { return m.Ref == ref })
			switch {
			case i < 0:
				matches = append(matches, store.Match{Ref: ref, Fields: []string{"email"}})
			case !slices.Contains(matches[i].Fields, "email"):
				matches[i].Fields = append(matches[i].Fields, "email")
			}
		}
	}
	if limit <= 0 {
		limit = SearchLimit
	}
	limit = min(limit, MaxSearchLimit)
	cursor = max(cursor, 0)
	res := &SearchResult{Query: q, Notices: []SearchHit{}, Total: len(matches), Truncated: found.Truncated}
	if cursor >= len(matches) {
		return res, nil
	}
	page := matches[cursor:min(cursor+limit, len(matches))]
	if cursor+limit < len(matches) {
		res.NextCursor = strconv.Itoa(cursor + limit)
	}
	refs := make([]store.Ref, len(page))
	for i, m := range page {
		refs[i] = m.Ref
	}
	ns, err := a.notices(ctx, refs)
	if err != nil {
		return nil, err
	}
	for _, n := range ns {
		i := slices.IndexFunc(page, func(m store.Match) bool { return m.Ref == store.Ref{CampaignID: n.Campaign.ID, RecipientID: n.ID} })
		res.Notices = append(res.Notices, SearchHit{Notice: n, Matched: page[i].Fields})
	}
	return res, nil
}

// campaign and the recipient exactly as the worker renders it.
type SentNotice struct {
	Campaign CampaignRef `json:"campaign"`
	To       string      `json:"to"`
	Locale   string      `json:"locale"`
	Resend   int         `json:"resend,omitempty"`
	Subject  string      `json:"subject"`
	Text     string      `json:"text"`
}

// RenderSent renders recipient rid's notice (resend > 0: that resend's,
// in its language and to its address) as it was sent: dated by the
// campaign's start, in the language it went in. Reading it is reading the
// customer's personal data, so it is audited. Card digits are never more
// than the last four (the templates print no more, and any longer run is
// masked).
func (a *App) RenderSent(ctx context.Context, cid string, rid int64, resend int) (*SentNotice, error) {
	c, rc, err := a.recipient(ctx, cid, rid)
	if err != nil {
		return nil, err
	}
	n := noticeOf(c, rc, time.Now())
	out := &SentNotice{Campaign: n.Campaign, To: rc.Email, Locale: n.NoticeLocale}
	if resend > 0 {
		if resend > len(rc.Resends) {
			return nil, fmt.Errorf("resend %d of recipient %d: %w", resend, rid, store.ErrNotFound)
		}
		rs := rc.Resends[resend-1]
		out.Resend, out.To = resend, rs.Email
		if rs.Locale != "" {
			out.Locale = rs.Locale
		}
	}
	rc.Locale = out.Locale
	date := time.Now()
	if c.StartedAt != nil {
		date = *c.StartedAt
	}
	r, err := a.templates.Render(c.Template, templates.Input{Locale: out.Locale, Data: c.Data, Recipient: *rc, Paragraphs: c.Paragraphs, Date: date.In(c.Zone())})
	if err != nil {
		return nil, fmt.Errorf("render notice of %s/%d: %w", cid, rid, err)
	}
	out.Subject, out.Text = ingest.MaskCardNumbers(r.Subject), ingest.MaskCardNumbers(r.Text)
	a.Audit(ctx, store.AuditEntry{Action: "recipient.view", CampaignID: cid, Recipient: rid})
	return out, nil
}

// cursorOrNull is a next_cursor as every list gives it: null on the last
// page.
func cursorOrNull(c string) any {
	if c == "" {
		return nil
	}
	return c
}
