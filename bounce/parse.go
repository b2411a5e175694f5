package bounce

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // bounces come in any charset
	"github.com/emersion/go-message/textproto"
)

// Kind is what a message that came back to a return path is.
type Kind string

// The kinds, in the order Parse tries them: a report's type decides before
// any auto-reply header (Postfix marks its own DSNs Auto-Submitted:
// auto-replied).
const (
	KindBounce    Kind = "bounced"      // DSN Action failed (also with a 4.x.x Status: the relay's queue expired)
	KindDelayed   Kind = "delayed"      // DSN Action delayed: still trying; an event, not an outcome
	KindDelivered Kind = "delivered"    // DSN Action delivered, relayed or expanded
	KindComplaint Kind = "complained"   // ARF feedback report (RFC 5965)
	KindAutoReply Kind = "auto-reply"   // out-of-office and other RFC 3834 replies: never a bounce
	KindUnknown   Kind = "unrecognised" // kept for a person to look at
)

// Report is what Parse found in one message.
type Report struct {
	Kind Kind
	// From the DSN's per-message and (first) per-recipient fields.
	Action, Status, Diagnostic, ReportingMTA, EnvID string
	FinalRecipient, OriginalRecipient               string // addresses without the "rfc822;" type
	FeedbackType                                    string // ARF Feedback-Type (abuse, fraud, …)
	// HeaderToken is the X-Oshirase-Token of the returned notice, for
	// bounces that lost the envelope.
	HeaderToken string
}

// Hard reports whether the address itself is bad (5.1.x: no such user,
// bad domain; 5.2.1: mailbox disabled), so it goes on the suppression
// list; a full mailbox or a policy refusal does not.
func (r *Report) Hard() bool {
	return r.Kind == KindBounce && (strings.HasPrefix(r.Status, "5.1.") || r.Status == "5.2.1")
}

// ErrMalformed wraps every parse failure: the message is kept as unrecognised.
var ErrMalformed = errors.New("malformed message")

// Parse reads one message that came back to a return path.
func Parse(r io.Reader) (*Report, error) {
	e, err := message.Read(r)
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		return &Report{Kind: KindUnknown}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	ct, params, _ := e.Header.ContentType()
	if ct == "multipart/report" {
		switch strings.ToLower(params["report-type"]) {
		case "delivery-status", "global-delivery-status":
			return parseDSN(e)
		case "feedback-report":
			return parseARF(e)
		}
	}
	if ct == "" || ct == "text/plain" {
		if rep, ok := parseQmail(e); ok {
			return rep, nil
		}
	}
	if isAutoReply(&e.Header) {
		return &Report{Kind: KindAutoReply}, nil
	}
	return &Report{Kind: KindUnknown}, nil
}

// isAutoReply: RFC 3834's Auto-Submitted, and the headers common
// responders (Exchange, vacation, Gmail) set instead.
func isAutoReply(h *message.Header) bool {
	as := strings.ToLower(strings.TrimSpace(h.Get("Auto-Submitted")))
	if as != "" && as != "no" {
		return true
	}
	if h.Get("X-Autoreply") != "" || h.Get("X-Autorespond") != "" {
		return true
	}
	p := strings.ToLower(h.Get("Precedence"))
	return p == "auto_reply"
}

// parts calls f for each part of a multipart entity, with its media type.
func parts(e *message.Entity, f func(ct string, p *message.Entity) error) error {
	mr := e.MultipartReader()
	if mr == nil {
		return fmt.Errorf("%w: report is not multipart", ErrMalformed)
	}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return nil
		}
		if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		ct, _, _ := p.Header.ContentType()
		if err := f(strings.ToLower(ct), p); err != nil {
			return err
		}
	}
}

// returnedToken reads the header of a returned message
// (message/rfc822, text/rfc822-headers, message/global(-headers)).
func returnedToken(p *message.Entity) string {
	h, err := textproto.ReadHeader(bufio.NewReader(io.LimitReader(p.Body, 256<<10)))
	if err != nil && h.Len() == 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSpace(h.Get("X-Oshirase-Token")))
}

func isReturned(ct string) bool {
	switch ct {
	case "message/rfc822", "text/rfc822-headers", "message/global", "message/global-headers", "message/rfc822-headers":
		return true
	}
	return false
}

// fieldBlocks reads a delivery-status or feedback-report body: header
// blocks separated by blank lines.
func fieldBlocks(r io.Reader) ([]textproto.Header, error) {
	b, err := io.ReadAll(io.LimitReader(r, 256<<10))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	var out []textproto.Header
	for _, blk := range bytes.Split(b, []byte("\n\n")) {
		blk = bytes.TrimLeft(blk, "\n")
		if len(bytes.TrimSpace(blk)) == 0 {
			continue
		}
		h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(append(blk, "\n\n"...))))
		if err != nil {
			return nil, fmt.Errorf("%w: delivery-status fields: %v", ErrMalformed, err)
		}
		out = append(out, h)
	}
	return out, nil
}

// typed strips an address-type prefix ("rfc822; a@b" → "a@b"), decoding
// xtext where the field may carry it.
func typed(v string) string {
	v = strings.TrimSpace(v)
	if _, a, ok := strings.Cut(v, ";"); ok {
		v = strings.TrimSpace(a)
	}
	return UnXText(v)
}

func parseDSN(e *message.Entity) (*Report, error) {
	rep := &Report{Kind: KindUnknown}
	found := false
	err := parts(e, func(ct string, p *message.Entity) error {
		switch {
		case ct == "message/delivery-status" || ct == "message/global-delivery-status":
			blocks, err := fieldBlocks(p.Body)
			if err != nil {
				return err
			}
			if len(blocks) < 2 {
				return fmt.Errorf("%w: delivery-status has no per-recipient fields", ErrMalformed)
			}
			m := blocks[0]
			rep.ReportingMTA = typed(m.Get("Reporting-MTA"))
			rep.EnvID = strings.ToLower(UnXText(strings.TrimSpace(m.Get("Original-Envelope-Id"))))
			// One recipient per notice: the first block is ours.
			rc := blocks[1]
			rep.Action = strings.ToLower(strings.TrimSpace(rc.Get("Action")))
			rep.Status = strings.TrimSpace(strings.Fields(rc.Get("Status") + " ")[0])
			rep.Diagnostic = strings.Join(strings.Fields(rc.Get("Diagnostic-Code")), " ")
			rep.FinalRecipient = typed(rc.Get("Final-Recipient"))
			rep.OriginalRecipient = typed(rc.Get("Original-Recipient"))
			found = true
		case isReturned(ct):
			rep.HeaderToken = returnedToken(p)
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	if !found {
		return rep, fmt.Errorf("%w: report without a delivery-status part", ErrMalformed)
	}
	rep.Kind = classify(rep.Action, rep.Status)
	return rep, nil
}

// classify decides by Action first — Postfix says "failed" with a 4.x.x
// Status when a message expired in its queue: final, not soft — and by
// Status only when Action says nothing we know.
func classify(action, status string) Kind {
	switch action {
	case "failed":
		return KindBounce
	case "delayed":
		return KindDelayed
	case "delivered", "relayed", "expanded":
		return KindDelivered
	}
	switch {
	case strings.HasPrefix(status, "5."):
		return KindBounce
	case strings.HasPrefix(status, "4."):
		return KindDelayed
	case strings.HasPrefix(status, "2."):
		return KindDelivered
	}
	return KindUnknown
}

func parseARF(e *message.Entity) (*Report, error) {
	rep := &Report{Kind: KindComplaint}
	err := parts(e, func(ct string, p *message.Entity) error {
		switch {
		case ct == "message/feedback-report":
			blocks, err := fieldBlocks(p.Body)
			if err != nil {
				return err
			}
			if len(blocks) > 0 {
				rep.FeedbackType = strings.ToLower(strings.TrimSpace(blocks[0].Get("Feedback-Type")))
				rep.ReportingMTA = typed(blocks[0].Get("Reporting-MTA"))
				rep.OriginalRecipient = typed(blocks[0].Get("Original-Rcpt-To"))
			}
		case isReturned(ct):
			rep.HeaderToken = returnedToken(p)
		}
		return nil
	})
	return rep, err
}

// qmailBreak ends the report part of a qmail bounce (QSBMF); what follows
// is the returned message.
const qmailBreak = "--- Below this line is a copy of the message."

// qmailStatus is the "(#5.1.1)" qmail appends to its own failure texts.
var qmailStatus = regexp.MustCompile(`\(#([245]\.\d{1,3}\.\d{1,3})\)`)

// parseQmail reads qmail-send's bounce, which is not RFC 3464 but its
// own plain text (QSBMF, cr.yp.to/proto/qsbmf.txt): "Hi. This is the
// qmail-send program at host.", then per recipient a paragraph "<addr>:"
// and the reason, then the break line and the returned message. qmail
// bounces only what it has given up on (a permanent failure, or its queue
// lifetime run out), so every one is a final failure; the status is the
// "(#x.y.z)" in the reason, else the remote server's enhanced code, else
// 5.0.0. The token comes from the envelope (VERP) or the returned
// X-Oshirase-Token header. ok is false for any other plain text.
func parseQmail(e *message.Entity) (*Report, bool) {
	b, err := io.ReadAll(io.LimitReader(e.Body, 256<<10))
	if err != nil {
		return nil, false
	}
	text := strings.ReplaceAll(string(b), "\r\n", "\n")
	if !strings.HasPrefix(strings.TrimLeft(text, "\n"), "Hi. This is the qmail-send program") {
		return nil, false
	}
	rep := &Report{Kind: KindBounce, Action: "failed"}
	report, returned, _ := strings.Cut(text, qmailBreak)
	if host, _, ok := strings.Cut(strings.TrimPrefix(strings.TrimLeft(report, "\n"), "Hi. This is the qmail-send program at "), "\n"); ok {
		rep.ReportingMTA = strings.TrimSuffix(strings.TrimSpace(host), ".")
	}
	// The first recipient paragraph: "<addr>:" then its reason.
	for _, para := range strings.Split(report, "\n\n") {
		para = strings.TrimSpace(para)
		if !strings.HasPrefix(para, "<") {
			continue
		}
		addr, reason, _ := strings.Cut(para, "\n")
		rep.FinalRecipient = strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(addr, "<"), ":"), ">")
		rep.Diagnostic = strings.Join(strings.Fields(reason), " ")
		break
	}
	switch m := qmailStatus.FindStringSubmatch(rep.Diagnostic); {
	case m != nil:
		rep.Status = m[1]
	default:
		if m := enhancedInText.FindString(rep.Diagnostic); m != "" {
			rep.Status = m
		} else {
			rep.Status = "5.0.0"
		}
	}
	if h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(strings.TrimLeft(returned, "\n")))); err == nil || h.Len() > 0 {
		rep.HeaderToken = strings.ToLower(strings.TrimSpace(h.Get("X-Oshirase-Token")))
	}
	return rep, true
}

// enhancedInText finds an RFC 3463 code in a server's reply text.
var enhancedInText = regexp.MustCompile(`\b[45]\.\d{1,3}\.\d{1,3}\b`)
