package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
	"github.com/oshirase/oshirase/tasks"
	"github.com/oshirase/oshirase/templates"
	"github.com/oshirase/oshirase/webhooks"
)

// MaxScheduleAhead bounds how far ahead a start may be scheduled: further
// is more likely a typo in the year than a plan.
const MaxScheduleAhead = 90 * 24 * time.Hour

// CreateCampaign checks req and makes a draft of it.
func (a *App) CreateCampaign(ctx context.Context, req CampaignRequest) (*notice.Campaign, error) {
	if errs := req.Validate(a.templates, a.cfg.DKIMDomains); len(errs) > 0 {
		a.NoteCards(ctx, errs)
		return nil, E(Invalid, "invalid_campaign", "the campaign has invalid fields", errs...)
	}
	c := req.Campaign()
	if err := a.store.CreateCampaign(ctx, &c); err != nil {
		return nil, err
	}
	a.Audit(ctx, store.AuditEntry{Action: "campaign.create", CampaignID: c.ID})
	return &c, nil
}

// campaignFields are the fields of a campaign a client sets: those of a
// CampaignRequest, and so those UpdateDraft may change.
var campaignFields = []string{"name", "template", "default_locale", "from", "reply_to", "charset", "rate", "time_zone", "extra_paragraphs", "data"}

// requestOf is c as the create request that would make it.
func requestOf(c *notice.Campaign) map[string]any {
	var from any = c.From
	if c.FromLocales != nil {
		from = c.FromLocales
	}
	return map[string]any{
		"name": c.Name, "template": c.Template, "default_locale": c.DefaultLocale, "from": from, "reply_to": c.ReplyTo,
		"charset": c.Charset, "rate": c.Rate, "time_zone": c.TimeZone, "extra_paragraphs": c.Paragraphs, "data": c.Data,
	}
}

// UpdateDraft changes a draft's fields as a JSON merge patch (RFC 7396) at
// the top level: each field given replaces that field whole (data too),
// null puts it back to its default, and the result is checked like a new
// campaign. A campaign that has started is what its notices were made of:
// Conflict not_draft.
func (a *App) UpdateDraft(ctx context.Context, id string, patch map[string]json.RawMessage) (*notice.Campaign, error) {
	var unknown []FieldError
	for k := range patch {
		if !slices.Contains(campaignFields, k) {
			unknown = append(unknown, FieldError{k, "unknown field (a campaign has " + strings.Join(campaignFields, ", ") + ")"})
		}
	}
	if len(unknown) > 0 {
		slices.SortFunc(unknown, func(a, b FieldError) int { return strings.Compare(a.Field, b.Field) })
		return nil, E(BadRequest, "bad_json", "request body: unknown fields", unknown...)
	}
	if len(patch) == 0 {
		return nil, E(Invalid, "invalid", "nothing to change: give at least one of "+strings.Join(campaignFields, ", "))
	}
	var changed []string
	c, err := a.store.UpdateDraft(ctx, id, func(c *notice.Campaign) error {
		merged := requestOf(c)
		for k, v := range patch {
			if string(bytes.TrimSpace(v)) == "null" {
				delete(merged, k) // back to its default, as if never given
			} else {
				merged[k] = v
			}
		}
		mb, _ := json.Marshal(merged)
		var req CampaignRequest
		if err := json.Unmarshal(mb, &req); err != nil {
			return E(Invalid, "invalid_campaign", "the campaign has invalid fields", FieldError{jsonField(err), err.Error()})
		}
		errs := req.Validate(a.templates, a.cfg.DKIMDomains)
		nc := req.Campaign()
		if nc.Charset == notice.CharsetISO2022JP && c.Charset != notice.CharsetISO2022JP && c.Counts.Total > 0 {
			// Uploaded recipients were checked for UTF-8 only: a name
			// ISO-2022-JP cannot carry would fail its send.
			errs = append(errs, FieldError{"charset", "cannot become iso-2022-jp once recipients are uploaded (they were checked for utf-8); make a new campaign"})
		}
		if len(errs) > 0 {
			a.NoteCards(ctx, errs)
			return E(Invalid, "invalid_campaign", "the campaign has invalid fields", errs...)
		}
		for k := range patch {
			changed = append(changed, k)
		}
		slices.Sort(changed)
		nc.ID, nc.Kind, nc.CreatedAt = c.ID, c.Kind, c.CreatedAt
		nc.Status, nc.Counts, nc.LastUpload, nc.ScheduledAt = c.Status, c.Counts, c.LastUpload, c.ScheduledAt
		*c = nc
		return nil
	})
	if err != nil {
		return nil, draftErr(err)
	}
	details, _ := json.Marshal(map[string]any{"fields": changed})
	a.Audit(ctx, store.AuditEntry{Action: "campaign.update", CampaignID: id, Details: details})
	return c, nil
}

// DeleteDraft deletes a draft with its recipients (a mistake, a test). A
// campaign that has started is part of the record of who was told what:
// cancel it, and purge its recipients' personal data when they are no
// longer needed (Conflict not_draft says so).
func (a *App) DeleteDraft(ctx context.Context, id string) error {
	c, err := a.store.Campaign(ctx, id)
	if err != nil {
		return err
	}
	if err := a.store.DeleteDraft(ctx, id); err != nil {
		return draftErr(err)
	}
	a.dropStartTask(ctx, c)
	details, _ := json.Marshal(map[string]any{"name": c.Name, "recipients": c.Counts.Total})
	a.Audit(ctx, store.AuditEntry{Action: "campaign.delete", CampaignID: id, Details: details})
	return nil
}

// draftErr is a change refused because the campaign is no draft: Conflict
// not_draft, saying what it is.
func draftErr(err error) error {
	if errors.Is(err, store.ErrNotDraft) {
		return &Error{Kind: Conflict, Code: "not_draft", Msg: strings.TrimSuffix(err.Error(), ": "+store.ErrNotDraft.Error()), Err: err}
	}
	return err
}

// jsonField names the field a JSON type error is about.
func jsonField(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return te.Field
	}
	return "body"
}

// Start starts a campaign now (at nil), or at at: a breach notice should go
// out when the hotline is open and the press release is out, not at 3 a.m.
// Starting now moves a draft to sending and enqueues its fan-out; starting
// again re-enqueues the same fan-out task id, which asynq refuses or which
// resumes from its cursor: nothing is sent twice either way. It returns the
// campaign as it now is.
func (a *App) Start(ctx context.Context, id string, at *time.Time) (*notice.Campaign, error) {
	c, err := a.store.Campaign(ctx, id)
	if err != nil {
		return nil, err
	}
	if c.Status == notice.CampaignDraft {
		// A draft made before a template required more (cause and
		// secondary_harm, which APPI requires) must not go out without it.
		if errs := DataErrors(a.templates.Validate(c.Template, c.Data)); errs != nil {
			return nil, E(Invalid, "invalid_campaign", "the campaign's data lacks what the notice must state; fix it in a new campaign", errs...)
		}
	}
	if c.Status == notice.CampaignDraft && c.Counts.Total == 0 {
		// Started, it would be done at once and for ever: an upload that
		// failed or went to another campaign should be noticed now.
		return nil, E(Invalid, "no_recipients",
			"campaign "+id+" has no recipients; upload them (POST /v1/campaigns/"+id+"/recipients) before starting")
	}
	if c.Charset == notice.CharsetISO2022JP {
		if problems := a.charsetProblems(c); problems != nil {
			return nil, E(Invalid, "charset", "the notice has characters ISO-2022-JP cannot carry", problems...)
		}
	}
	if now := time.Now(); at != nil && at.Before(now.Add(-time.Minute)) {
		// A mistyped year must not send a breach notice on the spot.
		return nil, E(Invalid, "invalid", "at is in the past; leave it out to start now",
			FieldError{"at", "in the past (" + at.Format(time.RFC3339) + ")"})
	}
	if c.Status == notice.CampaignDraft {
		// Starting again (a no-op) or resuming costs nothing; a new
		// start of a draft, now or scheduled, takes from the key's quota.
		if err := a.quota(ctx, limitStarts); err != nil {
			return nil, err
		}
	}
	if now := time.Now(); at != nil && at.After(now.Add(time.Second)) {
		if at.After(now.Add(MaxScheduleAhead)) {
			return nil, E(Invalid, "invalid", "at is more than 90 days ahead", FieldError{"at", "more than 90 days ahead"})
		}
		return a.schedule(ctx, c, at.Truncate(time.Millisecond))
	}
	notStarted := func(err error) error {
		return &Error{Kind: Unavailable, Code: "unavailable", Err: err,
			Msg: "the campaign could not be started (server problem); it is still " + string(c.Status) + "; try again later"}
	}
	// Recipients a failed upload stored but left out of the look-up index
	// go in now: support must find everyone a campaign sends to.
	if c.Status == notice.CampaignDraft {
		if err := a.store.RepairIndex(ctx, id); err != nil {
			return nil, notStarted(err)
		}
	}
	t, err := a.store.Start(ctx, id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalidMove) {
			return nil, err
		}
		// Redis refused (out of memory, away): the status change is one
		// script, so the campaign is still what it was.
		return nil, notStarted(err)
	}
	if t.Changed {
		a.dropStartTask(ctx, c)
	}
	if t.Status == notice.CampaignSending {
		if err := tasks.Fanout(ctx, a.queue, id, t.Gen); err != nil {
			// The campaign is sending but its fan-out is not queued. Say
			// so: a start again queues it (the watchdog also does within a
			// minute); nothing is sent twice either way.
			if t.Changed {
				a.Audit(ctx, store.AuditEntry{Action: "campaign.start", CampaignID: id})
			}
			a.log.Error("start: fan-out not queued", "campaign", id, "err", err)
			cur, _ := a.store.Campaign(context.WithoutCancel(ctx), id)
			return nil, &Error{Kind: Unavailable, Code: "start_incomplete", Details: cur, Err: fmt.Errorf("start: fan-out not queued: %w", err),
				Msg: "the campaign is marked sending, but its sending could not be queued (server problem); call start again to complete it"}
		}
	}
	if t.Changed {
		a.Audit(ctx, store.AuditEntry{Action: "campaign.start", CampaignID: id})
		a.lifecycle(ctx, "campaign started", id, "status", string(t.Status), "recipients", c.Counts.Total)
		a.emit(webhooks.CampaignStarted, id, string(t.Status))
	}
	return a.store.Campaign(ctx, id)
}

// charsetProblems renders the campaign for both locales with a sample
// recipient and reports what ISO-2022-JP cannot carry.
func (a *App) charsetProblems(c *notice.Campaign) []FieldError {
	var out []string
	for _, loc := range []string{notice.LocaleJA, notice.LocaleEN} {
		rd, err := a.templates.Render(c.Template, templates.Input{Locale: loc, Data: c.Data, Recipient: templates.SampleRecipient(loc), Paragraphs: c.Paragraphs})
		if err != nil {
			out = append(out, loc+": "+err.Error())
			continue
		}
		if err := templates.CheckCharset(rd, c.Charset); err != nil {
			out = append(out, loc+": "+err.Error())
		}
	}
	if out == nil {
		return nil
	}
	// One entry for the one field at fault: the charset the campaign chose.
	return []FieldError{{"charset", strings.Join(out, "; ")}}
}

// schedule has a draft start by itself at at. The start task goes first:
// should recording the schedule then fail (the campaign is no draft), the
// task finds no schedule of its time and does nothing.
func (a *App) schedule(ctx context.Context, c *notice.Campaign, at time.Time) (*notice.Campaign, error) {
	id := c.ID
	if err := tasks.StartAt(ctx, a.queue, id, at); err != nil {
		return nil, err
	}
	if err := a.store.Schedule(ctx, id, &at); err != nil {
		return nil, err
	}
	if c.ScheduledAt != nil && !c.ScheduledAt.Equal(at) {
		a.dropStartTask(ctx, c)
	}
	details, _ := json.Marshal(map[string]string{"at": at.UTC().Format(time.RFC3339)})
	a.Audit(ctx, store.AuditEntry{Action: "campaign.schedule", CampaignID: id, Details: details})
	a.lifecycle(ctx, "campaign scheduled", id, "at", at.UTC().Format(time.RFC3339))
	return a.store.Campaign(ctx, id)
}

// Unschedule clears a draft's scheduled start.
func (a *App) Unschedule(ctx context.Context, id string) (*notice.Campaign, error) {
	c, err := a.store.Campaign(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := a.store.Schedule(ctx, id, nil); err != nil {
		return nil, err
	}
	if c.ScheduledAt != nil { // unscheduling what was not scheduled changes nothing
		a.dropStartTask(ctx, c)
		a.Audit(ctx, store.AuditEntry{Action: "campaign.unschedule", CampaignID: id})
	}
	return a.store.Campaign(ctx, id)
}

// dropStartTask deletes the asynq task of c's previous schedule, so that
// operators do not see a start in the queue that will not happen. The task
// would do nothing anyway (it checks the schedule), so a failure is only
// logged.
func (a *App) dropStartTask(ctx context.Context, c *notice.Campaign) {
	if c.ScheduledAt == nil {
		return
	}
	insp := asynq.NewInspectorFromRedisClient(a.store.Redis())
	err := insp.DeleteTask(tasks.QueueUrgent, tasks.StartID(c.ID, *c.ScheduledAt))
	if err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
		a.log.Warn("could not delete a replaced start task", "campaign", c.ID, "err", err)
	}
}

// A move is a change of a campaign's status an operator asks for.
type move struct {
	action string // the audit entry's
	log    string // the lifecycle log line
	event  string // the status webhook event
	fn     func(*store.Store, context.Context, string) (store.Transition, error)
}

var (
	movePause  = move{"campaign.pause", "campaign paused", webhooks.CampaignPaused, (*store.Store).Pause}
	moveResume = move{"campaign.resume", "campaign resumed", webhooks.CampaignResumed, (*store.Store).Resume}
	moveCancel = move{"campaign.cancel", "campaign cancelled", webhooks.CampaignCancelled, (*store.Store).Cancel}
)

// Pause stops a sending campaign where it is; reason goes in the audit log.
func (a *App) Pause(ctx context.Context, id, reason string) (*notice.Campaign, error) {
	return a.move(ctx, movePause, id, reason)
}

// Resume sends what a paused campaign has left.
func (a *App) Resume(ctx context.Context, id, reason string) (*notice.Campaign, error) {
	return a.move(ctx, moveResume, id, reason)
}

// Cancel ends a campaign: what it has not sent is never sent.
func (a *App) Cancel(ctx context.Context, id, reason string) (*notice.Campaign, error) {
	return a.move(ctx, moveCancel, id, reason)
}

func (a *App) move(ctx context.Context, m move, id, reason string) (*notice.Campaign, error) {
	t, err := m.fn(a.store, ctx, id)
	if err != nil {
		return nil, err
	}
	if t.Changed {
		a.Audit(ctx, store.AuditEntry{Action: m.action, CampaignID: id, Reason: reason})
		a.lifecycle(ctx, m.log, id, "status", string(t.Status))
		a.emit(m.event, id, string(t.Status))
		if t.Status == notice.CampaignSending { // resumed: a new generation fans out what is left
			if err := tasks.Fanout(ctx, a.queue, id, t.Gen); err != nil {
				return nil, err
			}
		}
	}
	return a.store.Campaign(ctx, id)
}

// Purge removes the personal data of a done or cancelled campaign's
// recipients (see store.Purge) once it is no longer needed — after the
// delivery report has been kept, say. The campaign, its counts and the
// audit log stay. A reason is required: it is the record of why. It
// returns how many recipients were purged and the campaign.
func (a *App) Purge(ctx context.Context, id, reason string) (int64, *notice.Campaign, error) {
	if strings.TrimSpace(reason) == "" {
		return 0, nil, E(Invalid, "invalid", "a reason is required", FieldError{"reason", "required"})
	}
	if fe := a.CardInText(ctx, "reason", reason); fe != nil {
		return 0, nil, E(Invalid, "invalid", "the reason looks like it holds a full card number", fe...)
	}
	if c, err := a.store.Campaign(ctx, id); err != nil {
		return 0, nil, err
	} else if c.PurgedAt != nil {
		// Once is the record: a second purge would only move its time.
		return 0, nil, E(Conflict, "already_purged", "campaign "+id+" was purged at "+c.PurgedAt.UTC().Format(time.RFC3339))
	}
	if err := a.dropLostDeliveries(ctx, id); err != nil {
		return 0, nil, err
	}
	n, err := a.store.Purge(ctx, id)
	if n > 0 || err == nil {
		details, _ := json.Marshal(map[string]any{"recipients": n, "complete": err == nil})
		a.Audit(ctx, store.AuditEntry{Action: "campaign.purge", CampaignID: id, Reason: reason, Details: details})
	}
	if err != nil {
		return n, nil, err
	}
	a.emit(webhooks.CampaignPurged, id, "purged")
	c, err := a.store.Campaign(ctx, id)
	if err != nil {
		return n, nil, err
	}
	return n, c, nil
}

// dropLostDeliveries forgets the campaign's outstanding resends and single
// notices (see store.TrackDelivery) that are past their deadline and whose
// task asynq no longer holds, or holds archived: lost with a crashed Redis,
// deleted by an operator, or given up. One whose task is still queued,
// scheduled, retrying or running stays, and the purge waits for it,
// however late it is (workers that were down for an hour).
func (a *App) dropLostDeliveries(ctx context.Context, cid string) error {
	out, err := a.store.OutstandingDeliveries(ctx, cid)
	if err != nil {
		return err
	}
	now := time.Now()
	var insp *asynq.Inspector
	for _, o := range out {
		if o.Until.After(now) {
			continue
		}
		if insp == nil {
			insp = asynq.NewInspectorFromRedisClient(a.store.Redis())
		}
		info, err := insp.GetTaskInfo(tasks.QueueUrgent, o.TaskID)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound),
			err == nil && (info.State == asynq.TaskStateArchived || info.State == asynq.TaskStateCompleted):
			a.log.Warn("purge: forgetting a resend or notice whose task is gone", "campaign", cid, "task", o.TaskID)
			if err := a.store.DropStaleDelivery(ctx, cid, o); err != nil {
				return err
			}
		case err != nil:
			return fmt.Errorf("look up task %s: %w", o.TaskID, err)
		}
	}
	return nil
}
