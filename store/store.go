// Package store owns oshirase's own state in Redis: campaigns, recipients and
// their delivery status, suppressions and the audit log. It is the truth about
// who was sent what; asynq's task records are only the work queue.
package store

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/oshirase/oshirase/internal/clock"
	"github.com/oshirase/oshirase/notice"
)

// Errors callers map to API answers.
var (
	ErrNotFound    = errors.New("not found")
	ErrConflict    = errors.New("conflict")
	ErrNotDraft    = errors.New("campaign is not a draft")
	ErrInvalidMove = errors.New("invalid status change")
	ErrNotFinished = errors.New("campaign is not done or cancelled") // purging a draft, sending or paused one
)

// Store is oshirase's state on one Redis (or cluster).
type Store struct {
	rdb redis.UniversalClient
	k   keys

	// waitN and waitTimeout: REDIS_WAIT_REPLICAS and REDIS_WAIT_TIMEOUT
	// (see SetWaitReplicas).
	waitN       int
	waitTimeout time.Duration

	clock clock.Clock // every instant written to Redis (SetClock)
}

// New returns a Store whose keys all start with prefix (default "osh").
func New(rdb redis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = "osh"
	}
	return &Store{rdb: rdb, k: keys{p: prefix}, clock: clock.Real{}}
}

// SetClock replaces the wall clock the store stamps and compares instants
// with (claim and lease deadlines, created_at, finished_at …): tests move
// a clock.Sim instead of sleeping. Call it before the store is used.
func (s *Store) SetClock(c clock.Clock) { s.clock = c }

// Now is the store's clock; the worker uses the same one.
func (s *Store) Now() time.Time { return s.clock.Now() }

// Redis returns the client, for health checks and rate limiting.
func (s *Store) Redis() redis.UniversalClient { return s.rdb }

// Prefix returns the key prefix.
func (s *Store) Prefix() string { return s.k.p }

func newID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMS(s string) *time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n == 0 {
		return nil
	}
	t := time.UnixMilli(n).UTC()
	return &t
}

// CreateCampaign stores a new draft campaign and sets c.ID, c.Status and
// c.CreatedAt.
func (s *Store) CreateCampaign(ctx context.Context, c *notice.Campaign) error {
	c.ID = newID()
	c.Status = notice.CampaignDraft
	c.CreatedAt = s.Now().UTC().Truncate(time.Millisecond)
	def, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode campaign: %w", err)
	}
	ck := s.k.campaign(c.ID)
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, ck.def, def, 0)
		p.HSet(ctx, ck.state, "status", string(notice.CampaignDraft), "gen", 0, "seq", 0, "created_at", ms(c.CreatedAt), "index_through", 0)
		p.HSet(ctx, ck.counts, "total", 0)
		return nil
	})
	if err != nil {
		return fmt.Errorf("create campaign: %w", err)
	}
	if err := s.rdb.ZAdd(ctx, s.k.campaigns(), redis.Z{Score: float64(ms(c.CreatedAt)), Member: c.ID}).Err(); err != nil {
		return fmt.Errorf("index campaign: %w", err)
	}
	return nil
}

// Campaign returns a campaign with its current status and counts.
func (s *Store) Campaign(ctx context.Context, id string) (*notice.Campaign, error) {
	ck := s.k.campaign(id)
	var def *redis.StringCmd
	var st, cnt *redis.MapStringStringCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		def = p.Get(ctx, ck.def)
		st = p.HGetAll(ctx, ck.state)
		cnt = p.HGetAll(ctx, ck.counts)
		return nil
	})
	if errors.Is(err, redis.Nil) || (err == nil && def.Val() == "") {
		return nil, fmt.Errorf("campaign %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("load campaign %s: %w", id, err)
	}
	var c notice.Campaign
	if err := json.Unmarshal([]byte(def.Val()), &c); err != nil {
		return nil, fmt.Errorf("decode campaign %s: %w", id, err)
	}
	applyState(&c, st.Val(), cnt.Val())
	return &c, nil
}

func applyState(c *notice.Campaign, st, cnt map[string]string) {
	c.Status = notice.CampaignStatus(st["status"])
	c.StartedAt = fromMS(st["started_at"])
	c.FinishedAt = fromMS(st["finished_at"])
	c.PurgedAt = fromMS(st["purged_at"])
	c.ScheduledAt = fromMS(st["scheduled_at"])
	c.PausedReason = st["paused_reason"]
	c.PausedAt = fromMS(st["paused_at"])
	c.LastUpload = uploadOf(st)
	c.Counts = notice.Counts{}
	c.Counts.Total, _ = strconv.ParseInt(cnt["total"], 10, 64)
	for _, s := range notice.Statuses {
		n, _ := strconv.ParseInt(cnt[string(s)], 10, 64)
		c.Counts.Set(s, n)
	}
	c.Counts.PossibleDuplicate, _ = strconv.ParseInt(cnt["possible_duplicate"], 10, 64)
}

// CampaignState is the part of a campaign that changes while it sends.
type CampaignState struct {
	Status notice.CampaignStatus
	Gen    int64
	Seq    int64 // highest recipient id
}

// State returns a campaign's status, generation and highest recipient id.
func (s *Store) State(ctx context.Context, id string) (CampaignState, error) {
	v, err := s.rdb.HMGet(ctx, s.k.campaign(id).state, "status", "gen", "seq").Result()
	if err != nil {
		return CampaignState{}, fmt.Errorf("campaign %s state: %w", id, err)
	}
	if v[0] == nil {
		return CampaignState{}, fmt.Errorf("campaign %s: %w", id, ErrNotFound)
	}
	st := CampaignState{Status: notice.CampaignStatus(v[0].(string))}
	if g, ok := v[1].(string); ok {
		st.Gen, _ = strconv.ParseInt(g, 10, 64)
	}
	if q, ok := v[2].(string); ok {
		st.Seq, _ = strconv.ParseInt(q, 10, 64)
	}
	return st, nil
}

// CampaignPage is one page of the campaign list: Next is the cursor of the
// page after it ("" at the end).
type CampaignPage struct {
	Campaigns []*notice.Campaign
	Next      string
}

// ParseCampaignCursor reads a campaign list cursor ("<created ms>.<id>", as
// Campaigns gives it out).
func ParseCampaignCursor(c string) (ms int64, id string, err error) {
	a, id, ok := strings.Cut(c, ".")
	ms, perr := strconv.ParseInt(a, 10, 64)
	if !ok || perr != nil || ms < 0 || id == "" {
		return 0, "", fmt.Errorf("cursor %q is not one this API gave out", c)
	}
	return ms, id, nil
}

// Campaigns lists campaigns newest first, limit at a time, those of status
// want only when want is not "". The cursor is the position of the last
// campaign of the previous page (its creation time and id), not an offset:
// campaigns created or deleted meanwhile neither repeat nor skip one.
func (s *Store) Campaigns(ctx context.Context, cursor string, limit int, want notice.CampaignStatus) (*CampaignPage, error) {
	max, afterID := "+inf", ""
	if cursor != "" {
		ms, id, err := ParseCampaignCursor(cursor)
		if err != nil {
			return nil, err
		}
		max, afterID = strconv.FormatInt(ms, 10), id
	}
	page := &CampaignPage{Campaigns: []*notice.Campaign{}}
	const batch = 200
	// Bounded: a status filter reads at most this many batches per page
	// (then hands out a cursor where it stopped).
	for range 50 {
		zs, err := s.rdb.ZRevRangeByScoreWithScores(ctx, s.k.campaigns(), &redis.ZRangeBy{Max: max, Min: "-inf", Count: batch}).Result()
		if err != nil {
			return nil, fmt.Errorf("list campaigns: %w", err)
		}
		var last redis.Z
		for _, z := range zs {
			id := z.Member.(string)
			// Ties (same millisecond) come in reverse id order: skip up
			// to and including the cursor's campaign.
			if afterID != "" && strconv.FormatFloat(z.Score, 'f', 0, 64) == max && id >= afterID {
				continue
			}
			last = z
			c, err := s.Campaign(ctx, id)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if want != "" && c.Status != want {
				continue
			}
			page.Campaigns = append(page.Campaigns, c)
			if len(page.Campaigns) == limit {
				page.Next = campaignCursor(z)
				return page, nil
			}
		}
		if len(zs) < batch || last.Member == nil {
			return page, nil
		}
		max, afterID = strconv.FormatFloat(last.Score, 'f', 0, 64), last.Member.(string)
	}
	page.Next = max + "." + afterID
	return page, nil
}

func campaignCursor(z redis.Z) string {
	return strconv.FormatFloat(z.Score, 'f', 0, 64) + "." + z.Member.(string)
}

// UpdateDraft replaces a draft campaign's definition with fn's change of
// it. Only a draft changes: its definition is what every notice is made of,
// and one already sending must stay what it was when it started (ErrNotDraft).
func (s *Store) UpdateDraft(ctx context.Context, id string, fn func(*notice.Campaign) error) (*notice.Campaign, error) {
	ck := s.k.campaign(id)
	var out *notice.Campaign
	err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
		c, err := s.Campaign(ctx, id)
		if err != nil {
			return err
		}
		if c.Status != notice.CampaignDraft {
			return fmt.Errorf("campaign %s is %s; only a draft can be changed: %w", id, c.Status, ErrNotDraft)
		}
		if err := fn(c); err != nil {
			return err
		}
		def := *c
		def.Status, def.Counts, def.LastUpload, def.ScheduledAt = "", notice.Counts{}, nil, nil
		b, err := json.Marshal(&def)
		if err != nil {
			return fmt.Errorf("encode campaign: %w", err)
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, ck.def, b, 0)
			return nil
		})
		out = c
		return err
	}, ck.state, ck.def)
	if errors.Is(err, redis.TxFailedErr) {
		return nil, fmt.Errorf("campaign %s changed meanwhile; try again: %w", id, ErrConflict)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// deleteDraftScript deletes a draft campaign's keys, if it is still a draft.
// KEYS: the campaign's state key, then every key of the campaign.
// ARGV: none. Returns 1 when deleted; errors NOCAMPAIGN or NOTDRAFT <status>.
var deleteDraftScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return redis.error_reply('NOCAMPAIGN') end
if st ~= 'draft' then return redis.error_reply('NOTDRAFT ' .. st) end
redis.call('DEL', unpack(KEYS))
return 1
`)

// DeleteDraft removes a draft campaign with its recipients, and their
// entries in the address index. A campaign that has started is part of the
// record (who was told what) and is never deleted (ErrNotDraft).
func (s *Store) DeleteDraft(ctx context.Context, id string) error {
	st, err := s.State(ctx, id)
	if err != nil {
		return err
	}
	if st.Status != notice.CampaignDraft {
		return fmt.Errorf("campaign %s is %s; only a draft can be deleted (cancel, then purge, one that has started): %w", id, st.Status, ErrNotDraft)
	}
	// Its recipients leave the support look-up first (as a purge takes
	// them out); the deletion below checks again that it is still a draft.
	for from := int64(1); from <= st.Seq; from += purgeBatch {
		if _, err := s.purgeRange(ctx, id, from, min(from+purgeBatch, st.Seq+1)); err != nil {
			return fmt.Errorf("delete campaign %s: %w", id, err)
		}
	}
	ck := s.k.campaign(id)
	keys := append([]string{ck.state}, ck.everything()...)
	err = deleteDraftScript.Run(ctx, s.rdb, keys).Err()
	switch {
	case err == nil:
	case strings.Contains(err.Error(), "NOCAMPAIGN"):
		return fmt.Errorf("campaign %s: %w", id, ErrNotFound)
	case strings.Contains(err.Error(), "NOTDRAFT"):
		return fmt.Errorf("campaign %s is %s; only a draft can be deleted (cancel, then purge, one that has started): %w",
			id, strings.TrimPrefix(err.Error(), "NOTDRAFT "), ErrNotDraft)
	default:
		return fmt.Errorf("delete campaign %s: %w", id, err)
	}
	return s.rdb.ZRem(ctx, s.k.campaigns(), id).Err()
}

// Transition is the result of a campaign status change.
type Transition struct {
	Changed bool
	Status  notice.CampaignStatus
	Gen     int64
}

func (s *Store) transition(ctx context.Context, id string, from []notice.CampaignStatus, to notice.CampaignStatus, bumpGen bool, stamp string) (Transition, error) {
	ck := s.k.campaign(id)
	fs := make([]string, len(from))
	for i, f := range from {
		fs[i] = string(f)
	}
	bump := "0"
	if bumpGen {
		bump = "1"
	}
	if to == notice.CampaignSending {
		// Before the change, so that a campaign never sends unseen by the
		// watchdog (which completes a start whose fan-out was not queued).
		// A campaign there that does not send is dropped by it.
		if err := s.rdb.SAdd(ctx, s.k.active(), id).Err(); err != nil {
			return Transition{}, fmt.Errorf("campaign %s: %w", id, err)
		}
	}
	v, err := transitionScript.Run(ctx, s.rdb, ck.scriptKeys(), ms(s.Now()), strings.Join(fs, " "), string(to), bump, stamp).Slice()
	if err != nil {
		if strings.Contains(err.Error(), "NOCAMPAIGN") {
			return Transition{}, fmt.Errorf("campaign %s: %w", id, ErrNotFound)
		}
		return Transition{}, fmt.Errorf("campaign %s: %w", id, err)
	}
	t := Transition{Changed: v[0].(int64) == 1, Status: notice.CampaignStatus(v[1].(string)), Gen: v[2].(int64)}
	if v[0].(int64) < 0 {
		return t, fmt.Errorf("campaign %s is %s, cannot become %s: %w", id, t.Status, to, ErrInvalidMove)
	}
	if t.Changed && t.Status == notice.CampaignSending {
		// Again, should a watchdog have dropped it as a draft in between.
		s.rdb.SAdd(ctx, s.k.active(), id)
	}
	return t, nil
}

// Start moves a draft campaign to sending. Starting a campaign that is
// already sending (or done) changes nothing and reports Changed false.
func (s *Store) Start(ctx context.Context, id string) (Transition, error) {
	t, err := s.transition(ctx, id, []notice.CampaignStatus{notice.CampaignDraft}, notice.CampaignSending, true, "started_at")
	if errors.Is(err, ErrInvalidMove) && (t.Status == notice.CampaignDone) {
		return t, nil
	}
	if err == nil && t.Changed {
		// Started: a schedule it had is spent (its task finds no match).
		s.rdb.HDel(ctx, s.k.campaign(id).state, "scheduled_at")
	}
	return t, err
}

// scheduleScript sets or clears a draft's scheduled start.
// KEYS: 1 state. ARGV: 1 the start (unix ms; "0" clears it).
// Returns 1; errors NOCAMPAIGN, NOTDRAFT <status>.
var scheduleScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return redis.error_reply('NOCAMPAIGN') end
if st ~= 'draft' then return redis.error_reply('NOTDRAFT ' .. st) end
if ARGV[1] == '0' then redis.call('HDEL', KEYS[1], 'scheduled_at')
else redis.call('HSET', KEYS[1], 'scheduled_at', ARGV[1]) end
return 1
`)

// Schedule sets when a draft campaign starts by itself (a worker's start
// task for that time does it), or with at nil clears it. Only the latest
// schedule counts: a start task for another time finds no match.
func (s *Store) Schedule(ctx context.Context, id string, at *time.Time) error {
	v := "0"
	if at != nil {
		v = itoa(ms(*at))
	}
	err := scheduleScript.Run(ctx, s.rdb, []string{s.k.campaign(id).state}, v).Err()
	switch {
	case err == nil:
		return nil
	case strings.Contains(err.Error(), "NOCAMPAIGN"):
		return fmt.Errorf("campaign %s: %w", id, ErrNotFound)
	case strings.Contains(err.Error(), "NOTDRAFT"):
		return fmt.Errorf("campaign %s is %s; only a draft can be scheduled: %w", id, strings.TrimPrefix(err.Error(), "NOTDRAFT "), ErrNotDraft)
	}
	return fmt.Errorf("schedule %s: %w", id, err)
}

// Pause stops a sending campaign from claiming new recipients.
func (s *Store) Pause(ctx context.Context, id string) (Transition, error) {
	return s.transition(ctx, id, []notice.CampaignStatus{notice.CampaignSending}, notice.CampaignPaused, false, "")
}

// Resume continues a paused campaign under a new generation. A pause for
// the relay ends: its reason goes, and recipients its refusal reached are
// pending, so the new generation sends them.
func (s *Store) Resume(ctx context.Context, id string) (Transition, error) {
	if err := s.clearRelayPause(ctx, id); err != nil {
		return Transition{}, err
	}
	return s.transition(ctx, id, []notice.CampaignStatus{notice.CampaignPaused}, notice.CampaignSending, true, "")
}

// Cancel stops a campaign for good and marks every recipient not yet sent
// cancelled. Messages already handed to SMTP finish and are recorded.
func (s *Store) Cancel(ctx context.Context, id string) (Transition, error) {
	// Recipients held for the relay become pending here, then cancelled
	// below like every other unsent one.
	if err := s.clearRelayPause(ctx, id); err != nil {
		return Transition{}, err
	}
	t, err := s.transition(ctx, id, []notice.CampaignStatus{notice.CampaignDraft, notice.CampaignSending, notice.CampaignPaused}, notice.CampaignCancelled, true, "finished_at")
	if err != nil {
		return t, err
	}
	// Past the status change, a client that goes away must not leave the
	// marking half done (the watchdog finishes it otherwise, see
	// CancelUnsent).
	return t, s.CancelUnsent(context.WithoutCancel(ctx), id)
}

// CancelUnsent marks every pending or retrying recipient of a cancelled
// campaign cancelled, in batches. Cancel does it; the watchdog does it
// again for a campaign whose marking was cut short (a Redis error, a
// crash), so that no recipient stays pending in a cancelled campaign.
func (s *Store) CancelUnsent(ctx context.Context, id string) error {
	st, err := s.State(ctx, id)
	if err != nil {
		return err
	}
	ck := s.k.campaign(id)
	const batch = 20000 // bounded work per script call keeps Redis responsive
	for from := int64(1); from <= st.Seq; from += batch {
		to := min(from+batch, st.Seq+1)
		allowed := fmt.Sprintf("%d%d", codePending, codeRetrying)
		if err := markRangeScript.Run(ctx, s.rdb, ck.scriptKeys(), ms(s.Now()), codeCancelled, allowed, from, to).Err(); err != nil {
			return fmt.Errorf("cancel recipients of %s: %w", id, err)
		}
	}
	return nil
}

// Active lists campaigns that are (or recently were) sending.
func (s *Store) Active(ctx context.Context) ([]string, error) {
	return s.rdb.SMembers(ctx, s.k.active()).Result()
}

// Inactive drops a campaign from the active set.
func (s *Store) Inactive(ctx context.Context, id string) error {
	return s.rdb.SRem(ctx, s.k.active(), id).Err()
}

// DeleteCampaign removes a campaign and all its keys (tests and demo clean-up).
// The sets that name it go first: a campaign still listed as active (or
// paused for the relay) but with its keys gone would be swept by every
// watchdog round. An error stops it before the keys are deleted, so a
// failed delete leaves a whole campaign that can be deleted again.
func (s *Store) DeleteCampaign(ctx context.Context, id string) error {
	if err := s.rdb.SRem(ctx, s.k.active(), id).Err(); err != nil {
		return fmt.Errorf("delete campaign %s: %w", id, err)
	}
	if err := s.rdb.SRem(ctx, s.k.relayPaused(), id).Err(); err != nil {
		return fmt.Errorf("delete campaign %s: %w", id, err)
	}
	if err := s.rdb.ZRem(ctx, s.k.campaigns(), id).Err(); err != nil {
		return fmt.Errorf("delete campaign %s: %w", id, err)
	}
	if err := s.rdb.Del(ctx, s.k.campaign(id).everything()...).Err(); err != nil {
		return fmt.Errorf("delete campaign %s: %w", id, err)
	}
	return nil
}
