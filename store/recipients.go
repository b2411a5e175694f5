package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/net/idna"

	"github.com/oshirase/oshirase/metrics"
	"github.com/oshirase/oshirase/notice"
)

// profile is a recipient as uploaded, stored with short field names: at a
// million recipients every byte per record is a megabyte of Redis memory.
type profile struct {
	Email      string            `json:"e"`
	Name       string            `json:"n,omitempty"`
	Locale     string            `json:"l,omitempty"`
	CustomerID string            `json:"c,omitempty"`
	CardBrand  string            `json:"b,omitempty"`
	CardLast4  string            `json:"4,omitempty"`
	Extra      map[string]string `json:"x,omitempty"`
}

func toProfile(r *notice.Recipient) profile {
	return profile{Email: r.Email, Name: r.Name, Locale: r.Locale, CustomerID: r.CustomerID, CardBrand: r.CardBrand, CardLast4: r.CardLast4, Extra: r.Extra}
}

func (p profile) into(r *notice.Recipient) {
	r.Email, r.Name, r.Locale, r.CustomerID, r.CardBrand, r.CardLast4, r.Extra = p.Email, p.Name, p.Locale, p.CustomerID, p.CardBrand, p.CardLast4, p.Extra
}

// EmailKey is the form an address is indexed and deduplicated under: the
// domain is case-insensitive (RFC 5321), and in practice so is the local part
// at every provider people use; an internationalised domain is one domain in
// its Unicode and punycode forms (user@例え.jp is user@xn--r8jz45g.jp), so
// it is keyed in punycode, as uploads store it.
func EmailKey(addr string) string {
	k := strings.ToLower(strings.TrimSpace(addr))
	if at := strings.LastIndexByte(k, '@'); at >= 0 && !isASCII(k[at+1:]) {
		if d, err := idna.Lookup.ToASCII(k[at+1:]); err == nil {
			k = k[:at+1] + d
		}
	}
	return k
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// AddResult tells what AddRecipients did.
type AddResult struct {
	// IDs holds, per recipient given, its new id, or 0 when the address was
	// already in the campaign.
	IDs []int64
	// Repeats counts the new recipients whose address other campaigns had
	// already addressed; Earlier counts them per such campaign. A second
	// campaign to the same people may be meant (a follow-up) or a mistake
	// (the same notice twice); the uploader is told either way.
	Repeats int64
	Earlier map[string]int64
}

// AddRecipients appends recipients to a draft campaign in one round trip and
// indexes their addresses for support look-ups. Callers batch (a few hundred
// per call keeps each script short).
func (s *Store) AddRecipients(ctx context.Context, cid string, rs []notice.Recipient) (*AddResult, error) {
	return s.addRecipients(ctx, cid, rs, 0)
}

// AddUploadRows is AddRecipients for a batch of an upload that takes it
// through line: the upload's stored-through line (see BeginUpload) moves on
// in the same step. A result with an error means the rows were stored but
// not indexed (see RepairIndex).
func (s *Store) AddUploadRows(ctx context.Context, cid string, rs []notice.Recipient, line int) (*AddResult, error) {
	return s.addRecipients(ctx, cid, rs, line)
}

func (s *Store) addRecipients(ctx context.Context, cid string, rs []notice.Recipient, line int) (*AddResult, error) {
	if len(rs) == 0 {
		return &AddResult{}, nil
	}
	args := make([]any, 0, 2+2*len(rs))
	args = append(args, ms(s.Now()), line)
	for i := range rs {
		p, err := json.Marshal(toProfile(&rs[i]))
		if err != nil {
			return nil, fmt.Errorf("encode recipient: %w", err)
		}
		args = append(args, EmailKey(rs[i].Email), p)
	}
	v, err := addScript.Run(ctx, s.rdb, s.k.campaign(cid).scriptKeys(), args...).Int64Slice()
	if err != nil {
		switch {
		case strings.Contains(err.Error(), "NOCAMPAIGN"):
			return nil, fmt.Errorf("campaign %s: %w", cid, ErrNotFound)
		case strings.Contains(err.Error(), "NOTDRAFT"):
			return nil, fmt.Errorf("campaign %s: %w", cid, ErrNotDraft)
		}
		return nil, fmt.Errorf("add recipients to %s: %w", cid, err)
	}
	res := &AddResult{IDs: v}
	err = s.index(ctx, cid, rs, res)
	if err == nil {
		err = s.indexSearch(ctx, cid, rs, v)
	}
	if err != nil {
		// Stored but not indexed: res says what was stored; RepairIndex
		// indexes it before the campaign starts.
		return res, fmt.Errorf("%w: %w", errIndex, err)
	}
	first, last := int64(0), int64(0)
	for _, id := range v {
		if id > 0 {
			if first == 0 {
				first = id
			}
			last = id
		}
	}
	if last > 0 {
		// Behind is harmless (RepairIndex indexes again), so a failure here
		// is not one of the upload's.
		advanceIndexScript.Run(ctx, s.rdb, []string{s.k.campaign(cid).state}, first, last)
	}
	return res, nil
}

// indexScript appends "cid:rid" to each address's entry of the look-up hash
// and returns the entries that were there before: the address's notices in
// other campaigns.
//
// indexScript adds recipients to the support look-up.
// KEYS: 1 look-up hash. ARGV: pairs of (address, "cid:rid").
// Returns the earlier entries. A ref already there is not added twice
// (RepairIndex may index a recipient again).
var indexScript = redis.NewScript(`
local earlier = {}
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if cur then
    local have = false
    for ref in string.gmatch(cur, '%S+') do
      if ref == ARGV[i+1] then have = true end
    end
    if not have then
      redis.call('HSET', KEYS[1], ARGV[i], cur .. ' ' .. ARGV[i+1])
      earlier[#earlier+1] = cur
    end
  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1]) end
end
return earlier
`)

func (s *Store) index(ctx context.Context, cid string, rs []notice.Recipient, res *AddResult) error {
	args := make([]any, 0, 2*len(rs))
	for i, id := range res.IDs {
		if id > 0 {
			args = append(args, EmailKey(rs[i].Email), cid+":"+itoa(id))
		}
	}
	if len(args) == 0 {
		return nil
	}
	earlier, err := indexScript.Run(ctx, s.rdb, []string{s.k.emailIndex()}, args...).StringSlice()
	if err != nil {
		return fmt.Errorf("index addresses: %w", err)
	}
	for _, e := range earlier {
		res.Repeats++
		var seen []string // an address's campaigns, each counted once
		for _, ref := range strings.Fields(e) {
			if c, _, ok := strings.Cut(ref, ":"); ok && c != cid && !slices.Contains(seen, c) {
				seen = append(seen, c)
				if res.Earlier == nil {
					res.Earlier = map[string]int64{}
				}
				res.Earlier[c]++
			}
		}
	}
	return nil
}

// Ref names one recipient of one campaign.
type Ref struct {
	CampaignID  string
	RecipientID int64
}

// Lookup returns every recipient ever addressed to addr, across campaigns.
func (s *Store) Lookup(ctx context.Context, addr string) ([]Ref, error) {
	v, err := s.rdb.HGet(ctx, s.k.emailIndex(), EmailKey(addr)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up address: %w", err)
	}
	var out []Ref
	for _, f := range strings.Fields(v) {
		cid, rid, ok := strings.Cut(f, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(rid, 10, 64)
		out = append(out, Ref{cid, n})
	}
	return out, nil
}

// Rejections returns stored rejections [offset, offset+limit) and the total.
func (s *Store) Rejections(ctx context.Context, cid string, offset, limit int64) ([]string, int64, error) {
	key := s.k.campaign(cid).rej
	var lr *redis.StringSliceCmd
	var ll *redis.IntCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		lr = p.LRange(ctx, key, offset, offset+limit-1)
		ll = p.LLen(ctx, key)
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("rejections of %s: %w", cid, err)
	}
	return lr.Val(), ll.Val(), nil
}

// Chunk is what a worker needs to deliver recipients [From, To): profiles,
// current status and delivery records, read in one round trip.
type Chunk struct {
	State      CampaignState
	Recipients []notice.Recipient // only ids that exist, in id order
}

// LoadRecipients reads recipients [from, to) with their status and delivery
// records. With lease set, it also takes the chunk's lease in the same trip.
func (s *Store) LoadRecipients(ctx context.Context, cid string, from, to int64, lease time.Time) (*Chunk, error) {
	ids := make([]int64, 0, to-from)
	for id := from; id < to; id++ {
		ids = append(ids, id)
	}
	return s.load(ctx, cid, ids, lease)
}

// load reads the recipients ids (ascending, not empty) in one round trip;
// with lease set it also takes the lease of the chunk that starts at ids[0].
func (s *Store) load(ctx context.Context, cid string, ids []int64, lease time.Time) (*Chunk, error) {
	ck := s.k.campaign(cid)
	from, last := ids[0], ids[len(ids)-1]
	fields := make([]string, len(ids))
	for i, id := range ids {
		fields[i] = itoa(id)
	}
	var st *redis.SliceCmd
	var codes *redis.StringCmd
	var profs, dlvs, rss, doubts, bncs *redis.SliceCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		st = p.HMGet(ctx, ck.state, "status", "gen", "seq")
		codes = p.GetRange(ctx, ck.st, from, last)
		profs = p.HMGet(ctx, ck.rcpt, fields...)
		dlvs = p.HMGet(ctx, ck.dlv, fields...)
		rss = p.HMGet(ctx, ck.rs, fields...)
		doubts = p.HMGet(ctx, ck.doubt, fields...)
		bncs = p.HMGet(ctx, ck.bnc, fields...)
		if !lease.IsZero() {
			p.ZAdd(ctx, ck.chunks, redis.Z{Score: float64(ms(lease)), Member: itoa(from)})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load recipients %d-%d of %s: %w", from, last, cid, err)
	}
	c := &Chunk{}
	if v := st.Val(); v[0] != nil {
		c.State.Status = notice.CampaignStatus(v[0].(string))
		c.State.Gen, _ = strconv.ParseInt(fmt.Sprint(v[1]), 10, 64)
		c.State.Seq, _ = strconv.ParseInt(fmt.Sprint(v[2]), 10, 64)
	} else {
		return nil, fmt.Errorf("campaign %s: %w", cid, ErrNotFound)
	}
	cs := codes.Val()
	for i, pv := range profs.Val() {
		ps, ok := pv.(string)
		if !ok {
			continue
		}
		var r notice.Recipient
		var p profile
		if err := json.Unmarshal([]byte(ps), &p); err != nil {
			return nil, fmt.Errorf("decode recipient %d of %s: %w", ids[i], cid, err)
		}
		p.into(&r)
		r.ID, r.CampaignID = ids[i], cid
		if dv, ok := dlvs.Val()[i].(string); ok {
			if err := json.Unmarshal([]byte(dv), &r.Delivery); err != nil {
				return nil, fmt.Errorf("decode delivery %d of %s: %w", r.ID, cid, err)
			}
		}
		if rv, ok := rss.Val()[i].(string); ok {
			if err := json.Unmarshal([]byte(rv), &r.Resends); err != nil {
				return nil, fmt.Errorf("decode resends %d of %s: %w", r.ID, cid, err)
			}
		}
		if dv, ok := doubts.Val()[i].(string); ok {
			applyDoubt(&r.Delivery, dv)
		}
		if bv, ok := bncs.Val()[i].(string); ok {
			if err := decodeReturned(bv, &r.Returned); err != nil {
				return nil, fmt.Errorf("decode returned %d of %s: %w", r.ID, cid, err)
			}
		}
		r.Status = notice.StatusPending // beyond the status string: never written, so pending
		if j := r.ID - from; j < int64(len(cs)) {
			if r.Status, err = statusOf(cs[j]); err != nil {
				return nil, fmt.Errorf("recipient %d of %s: %w", r.ID, cid, err)
			}
		}
		c.Recipients = append(c.Recipients, r)
	}
	return c, nil
}

// Recipient returns one recipient with its status and history.
func (s *Store) Recipient(ctx context.Context, cid string, rid int64) (*notice.Recipient, error) {
	c, err := s.LoadRecipients(ctx, cid, rid, rid+1, time.Time{})
	if err != nil {
		return nil, err
	}
	if len(c.Recipients) == 0 {
		return nil, fmt.Errorf("recipient %d of campaign %s: %w", rid, cid, ErrNotFound)
	}
	return &c.Recipients[0], nil
}

// Page is one page of a campaign's recipients.
type Page struct {
	Recipients []notice.Recipient
	Next       int64 // first id of the next page; 0 when there is none
}

// Recipients lists recipients from id cursor on, optionally only those with
// status want. It reads at most scan ids per call, so a filter that matches
// little still answers quickly; the caller follows Next.
func (s *Store) Recipients(ctx context.Context, cid string, want notice.Status, cursor int64, limit int) (*Page, error) {
	if cursor < 1 {
		cursor = 1
	}
	st, err := s.State(ctx, cid)
	if err != nil {
		return nil, err
	}
	const scan = 5000
	page := &Page{}
	for from := cursor; from <= st.Seq; {
		to := min(from+scan, st.Seq+1)
		codes, err := s.rdb.GetRange(ctx, s.k.campaign(cid).st, from, to-1).Bytes()
		if err != nil {
			return nil, fmt.Errorf("recipients of %s: %w", cid, err)
		}
		var pick []int64
		next := int64(0)
		for id := from; id < to; id++ {
			code := byte(0)
			if i := id - from; i < int64(len(codes)) {
				code = codes[i]
			}
			if want != "" {
				st, err := statusOf(code)
				if err != nil {
					return nil, fmt.Errorf("recipient %d of %s: %w", id, cid, err)
				}
				if st != want {
					continue
				}
			}
			if len(pick) == limit {
				next = id
				break
			}
			pick = append(pick, id)
		}
		if len(pick) > 0 {
			c, err := s.load(ctx, cid, pick, time.Time{})
			if err != nil {
				return nil, err
			}
			page.Recipients = append(page.Recipients, c.Recipients...)
		}
		if next > 0 {
			page.Next = next
			return page, nil
		}
		from = to
		if len(page.Recipients) > 0 || from-cursor >= 4*scan {
			if from <= st.Seq {
				page.Next = from
			}
			return page, nil
		}
	}
	return page, nil
}

// StepResult is what Step reports.
type StepResult struct {
	Finished bool                  // the finish changed the recipient's status
	Claimed  bool                  // the claim was granted
	Current  notice.Status         // when not claimed: the recipient's status
	Busy     bool                  // when not claimed: someone else holds a live claim
	Stopped  bool                  // when not claimed: the campaign is not sending (or another generation)
	Campaign notice.CampaignStatus // the campaign's status after the step
	Gen      int64
	Done     bool // this step finished the campaign
	// Reasserted: a Reassert renewal found its claim gone (a failover lost
	// it, or the watchdog handed it over) and took it back.
	Reasserted bool
	// Doubted: this step found a possible duplicate (a claim taken over
	// from an attempt that never recorded its outcome, or a second "sent")
	// and recorded it (notice.Delivery.PossibleDuplicate).
	Doubted bool
}

// Step is one hot-path round trip: record the outcome of one recipient
// (Finish) and claim the next one (Claim). Either may be empty.
type Step struct {
	Token string // identifies the claimant, so a stale worker cannot free another's claim

	FinishID int64
	Finish   notice.Status
	Delivery *notice.Delivery // written as the recipient's delivery record

	ClaimID       int64
	ClaimTTL      time.Duration
	Gen           int64 // claim only while the campaign is at this generation (0 = any)
	ClaimRetrying bool  // a retry task may claim a retrying recipient
	// Renew only extends a claim this Token already holds (a heartbeat
	// during a slow SMTP transaction); it never takes a recipient, and it
	// renews Lease only while the claim is still ours.
	Renew bool
	// Reassert (with Renew): the message is in flight, so a claim found
	// gone — lost in a failover, or handed over by the watchdog while this
	// process was frozen — is taken back rather than left for a second
	// sender. A claim another token holds live is never taken.
	Reassert bool

	Lease     int64 // chunk lease member (its first id); 0 = none
	LeaseTTL  time.Duration
	DropLease bool
}

// Do runs a Step. With REDIS_WAIT_REPLICAS set (SetWaitReplicas), a step
// that claims a recipient or records an outcome waits for the replicas; when
// they do not acknowledge it in time, Do returns the primary's answer with
// an error wrapping ErrUnreplicated (the caller hands the claim back or
// writes the outcome again: running a Step again with its token is
// harmless).
func (s *Store) Do(ctx context.Context, cid string, st Step) (StepResult, error) {
	now := s.Now()
	dlv, sentAt := "", ""
	if st.Delivery != nil {
		d := *st.Delivery
		d.Status = st.Finish
		d.Resends = nil
		d.PossibleDuplicate = nil // kept in its own hash, see load
		b, err := json.Marshal(d)
		if err != nil {
			return StepResult{}, fmt.Errorf("encode delivery: %w", err)
		}
		dlv = string(b)
		if st.Finish == notice.StatusSent && d.SentAt != nil {
			// As the delivery JSON spells it: the script tells our own
			// repeated step from a second "sent" by comparing the two.
			b, _ := json.Marshal(d.SentAt)
			sentAt = strings.Trim(string(b), `"`)
		}
	}
	lease := ""
	if st.Lease > 0 {
		lease = itoa(st.Lease)
	}
	finish := codePending // no finish (FinishID 0): not read
	if st.FinishID > 0 {
		var err error
		if finish, err = codeOf(st.Finish); err != nil {
			return StepResult{}, fmt.Errorf("step %s/%d→%d: %w", cid, st.FinishID, st.ClaimID, err)
		}
	}
	claims := st.ClaimID > 0 && !st.Renew
	wait := s.waitN > 0 && (st.FinishID > 0 || claims)
	argv := stepArgv(now, st, finish, dlv, lease, sentAt)
	v, acked, err := s.evalWait(ctx, stepScript, s.k.campaign(cid).scriptKeys(), wait, argv...)
	if v == nil {
		return StepResult{}, fmt.Errorf("step %s/%d→%d: %w", cid, st.FinishID, st.ClaimID, scriptStatusError(err))
	}
	r := StepResult{
		Finished:   v[stepReplyFinished].(int64) == 1,
		Campaign:   notice.CampaignStatus(v[stepReplyStatus].(string)),
		Gen:        v[stepReplyGen].(int64),
		Done:       v[stepReplyDone].(int64) == 1,
		Reasserted: v[stepReplyReasserted].(int64) == 1,
		Doubted:    v[stepReplyDoubted].(int64) == 1,
	}
	switch c := v[stepReplyClaimed].(int64); {
	case c == claimGranted:
		r.Claimed = true
	case c == claimBusy:
		r.Busy, r.Current = true, notice.StatusSending
	case c == claimStopped:
		r.Stopped = true
	case c >= claimCurrent:
		var serr error
		if r.Current, serr = statusOf(byte(c - claimCurrent)); serr != nil {
			return StepResult{}, fmt.Errorf("step %s/%d→%d: %w", cid, st.FinishID, st.ClaimID, serr)
		}
	}
	if err != nil {
		return r, fmt.Errorf("step %s/%d→%d: %w", cid, st.FinishID, st.ClaimID, err)
	}
	if wait && acked < int64(s.waitN) {
		var what []string
		if st.FinishID > 0 {
			what = append(what, "outcome")
			metrics.RedisUnreplicated.WithLabelValues("outcome").Inc()
		}
		if claims && r.Claimed {
			what = append(what, "claim")
			metrics.RedisUnreplicated.WithLabelValues("claim").Inc()
		}
		if len(what) > 0 {
			return r, fmt.Errorf("step %s/%d→%d: %s reached %d of %d replicas in %s: %w",
				cid, st.FinishID, st.ClaimID, strings.Join(what, " and "), acked, s.waitN, s.waitTimeout, ErrUnreplicated)
		}
	}
	return r, nil
}

// stepArgv is the step script's ARGV, in the order its head names them
// (see stepScript).
func stepArgv(now time.Time, st Step, finish int, delivery, lease, sentAt string) []any {
	return []any{
		ms(now),                  //  1 now_ms
		st.Token,                 //  2 token
		st.FinishID,              //  3 finish_rid
		finish,                   //  4 finish_code
		delivery,                 //  5 delivery
		st.ClaimID,               //  6 claim_rid
		ms(now.Add(st.ClaimTTL)), //  7 claim_dl
		st.Gen,                   //  8 want_gen
		b2s(st.ClaimRetrying),    //  9 retrying
		lease,                    // 10 lease
		ms(now.Add(st.LeaseTTL)), // 11 lease_dl
		b2s(st.DropLease),        // 12 drop_lease
		b2s(st.Renew),            // 13 renew
		sentAt,                   // 14 sent_at
		b2s(st.Reassert),         // 15 reassert
	}
}

func b2s(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Mark moves recipients whose status is one of from to status to (e.g.
// pending → suppressed). It returns how many moved.
func (s *Store) Mark(ctx context.Context, cid string, rids []int64, from []notice.Status, to notice.Status) (int64, error) {
	if len(rids) == 0 {
		return 0, nil
	}
	code, err := codeOf(to)
	if err != nil {
		return 0, fmt.Errorf("mark %s recipients of %s: %w", to, cid, err)
	}
	allowed := ""
	for _, f := range from {
		c, err := codeOf(f)
		if err != nil {
			return 0, fmt.Errorf("mark %s recipients of %s: %w", to, cid, err)
		}
		allowed += strconv.Itoa(c)
	}
	if err := checkMoves(from, to); err != nil {
		return 0, fmt.Errorf("mark %s recipients of %s: %w", to, cid, err)
	}
	args := []any{ms(s.Now()), code, allowed}
	for _, r := range rids {
		args = append(args, r)
	}
	n, err := markScript.Run(ctx, s.rdb, s.k.campaign(cid).scriptKeys(), args...).Int64()
	if err != nil {
		return 0, fmt.Errorf("mark %s recipients of %s: %w", to, cid, scriptStatusError(err))
	}
	return n, nil
}

// Release hands back recipients claimed with token, to status to.
func (s *Store) Release(ctx context.Context, cid, token string, to notice.Status, rids ...int64) error {
	if len(rids) == 0 {
		return nil
	}
	if err := checkMoves([]notice.Status{notice.StatusSending}, to); err != nil {
		return fmt.Errorf("release recipients of %s: %w", cid, err)
	}
	code, err := codeOf(to)
	if err != nil {
		return fmt.Errorf("release recipients of %s: %w", cid, err)
	}
	args := []any{token, code}
	for _, r := range rids {
		args = append(args, r)
	}
	if err := releaseScript.Run(ctx, s.rdb, s.k.campaign(cid).scriptKeys(), args...).Err(); err != nil {
		return fmt.Errorf("release recipients of %s: %w", cid, scriptStatusError(err))
	}
	return nil
}

// Stolen is what Steal took over.
type Stolen struct {
	Chunks     []int64 // first ids of chunks whose lease expired
	Recipients []int64 // recipients whose claim expired; now retrying
}

// Steal takes over a campaign's expired chunk leases (renewing them for
// leaseTTL so only one watchdog takes each) and expired recipient claims.
func (s *Store) Steal(ctx context.Context, cid string, leaseTTL time.Duration) (Stolen, error) {
	return s.StealOrphans(ctx, cid, leaseTTL, "")
}

// StealOrphans is Steal that also takes over at once the claims whose token
// starts with prefix but is not among live: the caller's own tokens, of
// tasks that have ended, so their claims should be gone — an outcome
// written, then lost with a primary that failed over.
func (s *Store) StealOrphans(ctx context.Context, cid string, leaseTTL time.Duration, prefix string, live ...string) (Stolen, error) {
	now := s.Now()
	args := []any{ms(now), ms(now.Add(leaseTTL)), prefix}
	for _, t := range live {
		args = append(args, t)
	}
	v, err := stealScript.Run(ctx, s.rdb, s.k.campaign(cid).scriptKeys(), args...).StringSlice()
	if err != nil {
		return Stolen{}, fmt.Errorf("steal expired work of %s: %w", cid, err)
	}
	var out Stolen
	list := &out.Chunks
	for _, x := range v {
		if x == "|" {
			list = &out.Recipients
			continue
		}
		n, _ := strconv.ParseInt(x, 10, 64)
		*list = append(*list, n)
	}
	return out, nil
}

// SetChunkLease records that the chunk starting at from is being worked on.
func (s *Store) SetChunkLease(ctx context.Context, cid string, from int64, until time.Time) error {
	return s.rdb.ZAdd(ctx, s.k.campaign(cid).chunks, redis.Z{Score: float64(ms(until)), Member: itoa(from)}).Err()
}

// DropChunkLease removes a chunk's lease.
func (s *Store) DropChunkLease(ctx context.Context, cid string, from int64) error {
	return s.rdb.ZRem(ctx, s.k.campaign(cid).chunks, itoa(from)).Err()
}

// FanoutCursor returns the next recipient id the fan-out of generation gen
// has to enqueue (1 when it has not started).
func (s *Store) FanoutCursor(ctx context.Context, cid string, gen int64) (int64, error) {
	v, err := s.rdb.HGet(ctx, s.k.campaign(cid).state, "fanout:"+itoa(gen)).Int64()
	if errors.Is(err, redis.Nil) {
		return 1, nil
	}
	return v, err
}

// SetFanoutCursor records fan-out progress so a restarted fan-out resumes.
func (s *Store) SetFanoutCursor(ctx context.Context, cid string, gen, next int64) error {
	return s.rdb.HSet(ctx, s.k.campaign(cid).state, "fanout:"+itoa(gen), next).Err()
}

// handOutScript opens a campaign's window of chunk tasks: while fewer than
// ARGV[2] chunk leases are live, it hands out the next chunk from the
// current generation's cursor, moving the cursor and taking the chunk's
// lease in the same step, so a chunk handed out is never forgotten: if its
// task is lost, the lease expires and the watchdog hands it out again.
// KEYS: 1 state, 2 chunks. ARGV: 1 chunk size, 2 window, 3 now (ms),
// 4 lease deadline (ms).
// Returns {gen, seq, from...}: the first id of each chunk handed out (none
// when the campaign is not sending, its cursor is past the end or its
// window is full).
var handOutScript = redis.NewScript(`
local st = redis.call('HMGET', KEYS[1], 'status', 'gen', 'seq')
local gen, seq = tonumber(st[2]) or 0, tonumber(st[3]) or 0
local out = {gen, seq}
if st[1] ~= 'sending' then return out end
local field = 'fanout:' .. gen
local cur = tonumber(redis.call('HGET', KEYS[1], field) or '1')
local size, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local live = redis.call('ZCOUNT', KEYS[2], ARGV[3], '+inf')
while cur <= seq and live < window do
  redis.call('ZADD', KEYS[2], ARGV[4], cur)
  out[#out+1] = cur
  cur = cur + size
  live = live + 1
end
if #out > 2 then redis.call('HSET', KEYS[1], field, cur) end
return out
`)

// HandOut is what HandOut handed out.
type HandOut struct {
	Gen, Seq int64   // the campaign's generation and highest recipient id
	Froms    []int64 // first ids of the chunks handed out, each size long (the last may be shorter)
}

// HandOut hands out a campaign's next chunks, as many as its window of
// window live chunk leases has room for, each with a lease of leaseTTL.
func (s *Store) HandOut(ctx context.Context, cid string, size, window int64, leaseTTL time.Duration) (HandOut, error) {
	ck := s.k.campaign(cid)
	now := s.Now()
	v, err := handOutScript.Run(ctx, s.rdb, []string{ck.state, ck.chunks}, size, window, ms(now), ms(now.Add(leaseTTL))).Int64Slice()
	if err != nil {
		return HandOut{}, fmt.Errorf("hand out chunks of %s: %w", cid, err)
	}
	return HandOut{Gen: v[0], Seq: v[1], Froms: v[2:]}, nil
}

// AddResend appends a resend to a recipient's resends and returns its number.
func (s *Store) AddResend(ctx context.Context, cid string, rid int64, r notice.Resend) (int, error) {
	var n int
	err := s.updateResends(ctx, cid, rid, func(rs []notice.Resend) ([]notice.Resend, error) {
		r.N = len(rs) + 1
		n = r.N
		return append(rs, r), nil
	})
	if err != nil {
		return n, err
	}
	// A resend to a corrected address is found by that address too: the
	// customer who called with a new one asks "did it go there?".
	if err := addRefScript.Run(ctx, s.rdb, []string{s.k.emailIndex()}, EmailKey(r.Email), cid+":"+itoa(rid)).Err(); err != nil {
		return n, fmt.Errorf("index resend address: %w", err)
	}
	if err := s.indexSearch(ctx, cid, []notice.Recipient{{Email: r.Email}}, []int64{rid}); err != nil {
		return n, fmt.Errorf("index resend address: %w", err)
	}
	return n, nil
}

// addRefScript adds "cid:rid" to an address's entry of the look-up hash
// unless it is there already (a resend to the original address).
// KEYS: 1 look-up hash. ARGV: 1 address, 2 "cid:rid".
// Returns 1 if added, 0 if it was there.
var addRefScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return 1 end
for ref in string.gmatch(cur, '%S+') do
  if ref == ARGV[2] then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], cur .. ' ' .. ARGV[2])
return 1
`)

// LockResend takes the lock on sending resend n of a recipient for ttl, so
// that a task asynq runs twice does not send it twice. It reports whether
// the lock was free.
func (s *Store) LockResend(ctx context.Context, cid string, rid int64, n int, token string, ttl time.Duration) (bool, error) {
	ok, err := s.rdb.SetNX(ctx, s.k.campaign(cid).resendLock(rid, n), token, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("lock resend %d of recipient %d: %w", n, rid, err)
	}
	return ok, nil
}

// unlockScript deletes a resend lock only if it is still ours.
// KEYS: 1 the lock. ARGV: 1 the owner's token. Returns 1 if deleted, else 0.
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// UnlockResend gives back a lock LockResend gave token.
func (s *Store) UnlockResend(ctx context.Context, cid string, rid int64, n int, token string) error {
	return unlockScript.Run(ctx, s.rdb, []string{s.k.campaign(cid).resendLock(rid, n)}, token).Err()
}

// UpdateResend changes resend n of a recipient.
func (s *Store) UpdateResend(ctx context.Context, cid string, rid int64, n int, fn func(*notice.Resend)) error {
	return s.updateResends(ctx, cid, rid, func(rs []notice.Resend) ([]notice.Resend, error) {
		if n < 1 || n > len(rs) {
			return nil, fmt.Errorf("resend %d of recipient %d: %w", n, rid, ErrNotFound)
		}
		fn(&rs[n-1])
		return rs, nil
	})
}

// updateResends is an optimistic read-modify-write of one recipient's resends.
func (s *Store) updateResends(ctx context.Context, cid string, rid int64, fn func([]notice.Resend) ([]notice.Resend, error)) error {
	key := s.k.campaign(cid).rs
	field := itoa(rid)
	for range 50 {
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			var rs []notice.Resend
			v, err := tx.HGet(ctx, key, field).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			if v != "" {
				if err := json.Unmarshal([]byte(v), &rs); err != nil {
					return err
				}
			}
			rs, err = fn(rs)
			if err != nil {
				return err
			}
			b, err := json.Marshal(rs)
			if err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.HSet(ctx, key, field, b)
				return nil
			})
			return err
		}, key)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil {
			return fmt.Errorf("resends of %s/%d: %w", cid, rid, err)
		}
		return nil
	}
	return fmt.Errorf("resends of %s/%d: too much contention: %w", cid, rid, ErrConflict)
}

// LiveLeases is how many of a campaign's chunk leases have not expired.
func (s *Store) LiveLeases(ctx context.Context, cid string) (int64, error) {
	n, err := s.rdb.ZCount(ctx, s.k.campaign(cid).chunks, itoa(ms(s.Now())), "+inf").Result()
	if err != nil {
		return 0, fmt.Errorf("chunk leases of %s: %w", cid, err)
	}
	return n, nil
}

// LeasesRenewedSince is how many of a campaign's chunk leases were taken or
// renewed at since or later, for leases of ttl: a lease's deadline is its
// last renewal plus ttl. A chunk task renews its lease with every message
// and every few seconds while it waits, so a lease not renewed for a while
// is a leftover — of a task a failover lost, say — even before it expires.
func (s *Store) LeasesRenewedSince(ctx context.Context, cid string, since time.Time, ttl time.Duration) (int64, error) {
	n, err := s.rdb.ZCount(ctx, s.k.campaign(cid).chunks, itoa(ms(since.Add(ttl))), "+inf").Result()
	if err != nil {
		return 0, fmt.Errorf("chunk leases of %s: %w", cid, err)
	}
	return n, nil
}

// PendingChunks returns the first id of every size-aligned id range of a
// campaign that still holds a pending recipient. It reads the whole status
// string (a byte per recipient): for the watchdog's rare stall recovery, not
// for a hot path.
func (s *Store) PendingChunks(ctx context.Context, cid string, size int64) ([]int64, error) {
	st, err := s.State(ctx, cid)
	if err != nil {
		return nil, err
	}
	codes, err := s.rdb.GetRange(ctx, s.k.campaign(cid).st, 0, st.Seq).Bytes()
	if err != nil {
		return nil, fmt.Errorf("statuses of %s: %w", cid, err)
	}
	var out []int64
	for from := int64(1); from <= st.Seq; from += size {
		for id := from; id < min(from+size, st.Seq+1); id++ {
			if id >= int64(len(codes)) || codes[id] == codePending {
				out = append(out, from)
				break
			}
		}
	}
	return out, nil
}

// unindexScript removes "cid:rid" refs from addresses' entries of the
// look-up hash, and an entry left empty.
// KEYS: 1 look-up hash. ARGV: pairs of (address, "cid:rid"). Returns 0.
var unindexScript = redis.NewScript(`
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if cur then
    local keep = {}
    for ref in string.gmatch(cur, '%S+') do
      if ref ~= ARGV[i+1] then keep[#keep+1] = ref end
    end
    if #keep == 0 then redis.call('HDEL', KEYS[1], ARGV[i])
    else redis.call('HSET', KEYS[1], ARGV[i], table.concat(keep, ' ')) end
  end
end
return 0
`)

// purgeBatch is how many recipients Purge handles per round of commands.
const purgeBatch = 1000

// Purge removes the personal data of a done or cancelled campaign: its
// recipients' profiles (address, name, card digits, extra columns),
// delivery records and resends (which hold addresses and SMTP replies
// naming them), the address set, the rejections, and the recipients'
// entries in the support look-up index. What proves the campaign happened
// stays: its definition, state and counts, the status of each recipient id,
// and the audit log. It works a batch at a time, so Redis never blocks on
// one huge deletion, and it can be run again after a failure. It returns
// the number of recipients whose data it removed. The search index (names,
// addresses, phone numbers, customer ids) goes whole.
func (s *Store) Purge(ctx context.Context, cid string) (int64, error) {
	st, err := s.State(ctx, cid)
	if err != nil {
		return 0, err
	}
	ck := s.k.campaign(cid)
	if err := beginPurgeScript.Run(ctx, s.rdb, []string{ck.state, ck.counts, ck.chunks, ck.out}, ms(s.Now())).Err(); err != nil {
		kind, arg, _ := strings.Cut(err.Error(), " ")
		switch kind {
		case "NOTFINISHED":
			return 0, fmt.Errorf("campaign %s is %s: %w", cid, arg, ErrNotFinished)
		case "LEASES":
			// Just cancelled, workers may still be finishing messages in
			// flight and would write their outcome back after the purge.
			return 0, fmt.Errorf("campaign %s: %s chunks are still finishing; purge when they are done: %w", cid, arg, ErrConflict)
		case "SENDING":
			// So may a retry task, which holds a claim but no chunk lease.
			return 0, fmt.Errorf("campaign %s: %s messages are still in flight; purge when they are done: %w", cid, arg, ErrConflict)
		case "OUTSTANDING":
			// A resend or single notice accepted (202) but not sent yet
			// would find nobody to send to: the audit log would say resent,
			// and nothing would go out.
			return 0, fmt.Errorf("campaign %s: %s resends or notices are queued or being sent; purge once they have gone out: %w", cid, arg, ErrConflict)
		}
		return 0, fmt.Errorf("purge %s: %w", cid, err)
	}
	// The search index first: it is all personal data, and one key.
	if err := s.rdb.Unlink(ctx, ck.sx).Err(); err != nil {
		return 0, fmt.Errorf("purge %s: %w", cid, err)
	}
	var n int64
	for from := int64(1); from <= st.Seq; from += purgeBatch {
		k, err := s.purgeRange(ctx, cid, from, min(from+purgeBatch, st.Seq+1))
		n += k
		if err != nil {
			return n, fmt.Errorf("purge %s: %w", cid, err)
		}
	}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Unlink(ctx, ck.emails, ck.rej, ck.rejCounts, ck.claim, ck.chunks, ck.out, ck.relay, ck.reported, ck.att, ck.bnc, ck.raw, ck.sx)
		p.HSet(ctx, ck.state, "purged_at", ms(s.Now()))
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("purge %s: %w", cid, err)
	}
	return n, nil
}

// beginPurgeScript checks that a campaign can be purged and marks the purge
// begun (purging_at), in one step: a resend tracked (TrackDelivery) before
// it makes the purge refuse, one tracked after it is refused.
// KEYS: 1 state, 2 counts, 3 chunks, 4 out. ARGV: 1 now (ms).
// Returns 1, or an error: NOTFINISHED <status>, LEASES <n> (live chunk
// leases), SENDING <n> (recipients in flight), OUTSTANDING <n> (resends or
// single notices queued or being sent).
var beginPurgeScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'done' and st ~= 'cancelled' then return redis.error_reply('NOTFINISHED ' .. tostring(st)) end
local leases = redis.call('ZCOUNT', KEYS[3], ARGV[1], '+inf')
if leases > 0 then return redis.error_reply('LEASES ' .. leases) end
local sending = tonumber(redis.call('HGET', KEYS[2], 'sending') or '0')
if sending > 0 then return redis.error_reply('SENDING ' .. sending) end
local out = redis.call('ZCARD', KEYS[4])
if out > 0 then return redis.error_reply('OUTSTANDING ' .. out) end
if redis.call('HEXISTS', KEYS[1], 'purging_at') == 0 then redis.call('HSET', KEYS[1], 'purging_at', ARGV[1]) end
return 1
`)

// purgeRange purges recipients [from, to): their look-up index entries
// (original and corrected addresses), then their profiles, delivery records
// and resends. It returns how many recipients it found.
func (s *Store) purgeRange(ctx context.Context, cid string, from, to int64) (int64, error) {
	ck := s.k.campaign(cid)
	fields := make([]string, 0, to-from)
	for id := from; id < to; id++ {
		fields = append(fields, itoa(id))
	}
	var profs, rss *redis.SliceCmd
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		profs = p.HMGet(ctx, ck.rcpt, fields...)
		rss = p.HMGet(ctx, ck.rs, fields...)
		return nil
	}); err != nil {
		return 0, err
	}
	var found int64
	args := make([]any, 0, 2*len(fields))
	for i, pv := range profs.Val() {
		ps, ok := pv.(string)
		if !ok {
			continue
		}
		found++
		var p profile
		if err := json.Unmarshal([]byte(ps), &p); err != nil {
			return 0, fmt.Errorf("decode recipient %s: %w", fields[i], err)
		}
		ref := cid + ":" + fields[i]
		args = append(args, EmailKey(p.Email), ref)
		var rs []notice.Resend
		if rv, ok := rss.Val()[i].(string); ok {
			if err := json.Unmarshal([]byte(rv), &rs); err != nil {
				return 0, fmt.Errorf("decode resends %s: %w", fields[i], err)
			}
		}
		for _, r := range rs {
			if EmailKey(r.Email) != EmailKey(p.Email) {
				args = append(args, EmailKey(r.Email), ref)
			}
		}
	}
	if len(args) > 0 {
		if err := unindexScript.Run(ctx, s.rdb, []string{s.k.emailIndex()}, args...).Err(); err != nil {
			return 0, fmt.Errorf("look-up index: %w", err)
		}
	}
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HDel(ctx, ck.rcpt, fields...)
		p.HDel(ctx, ck.dlv, fields...)
		p.HDel(ctx, ck.rs, fields...)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return found, nil
}

// applyDoubt adds a recipient's doubt entry (the doubt hash: "reason t1
// t2;…", times as unix ms or RFC 3339, '?' for one lost) to its delivery:
// PossibleDuplicate with every attempt's time, and in the history the
// attempts that no delivery record holds: a taken-over attempt whose
// outcome was never recorded (Unknown), or a second "sent" recorded only
// here.
func applyDoubt(d *notice.Delivery, entry string) {
	doubt := &notice.Doubt{}
	var reasons []string
	for _, e := range strings.Split(entry, ";") {
		f := strings.Fields(e)
		if len(f) != 3 {
			continue
		}
		if !slices.Contains(reasons, f[0]) {
			reasons = append(reasons, f[0])
		}
		t1, ok1 := doubtTime(f[1])
		t2, ok2 := doubtTime(f[2])
		for _, t := range []time.Time{t1, t2} {
			if !t.IsZero() && !slices.ContainsFunc(doubt.Attempts, t.Equal) {
				doubt.Attempts = append(doubt.Attempts, t)
			}
		}
		switch {
		case f[0] == "takeover" && ok1:
			// The attempt whose outcome was lost: claimed at t1, taken over
			// at t2. A recorded attempt that started in between is that
			// attempt after all (its outcome came late).
			if !slices.ContainsFunc(d.History, func(a notice.Attempt) bool { return !a.At.Before(t1) && (!ok2 || a.At.Before(t2)) }) {
				d.History = append(d.History, notice.Attempt{At: t1, Unknown: true})
			}
		case f[0] == "sent_twice" && ok2:
			if !slices.ContainsFunc(d.History, func(a notice.Attempt) bool { return a.At.Equal(t2) }) {
				d.History = append(d.History, notice.Attempt{At: t2, OK: true})
			}
		}
	}
	if len(reasons) == 0 {
		return
	}
	slices.SortFunc(doubt.Attempts, func(a, b time.Time) int { return a.Compare(b) })
	slices.SortStableFunc(d.History, func(a, b notice.Attempt) int { return a.At.Compare(b.At) })
	doubt.Reason = strings.Join(reasons, ",")
	d.PossibleDuplicate = doubt
}

func doubtTime(v string) (time.Time, bool) {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
		return time.UnixMilli(n).UTC(), true
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC(), true
	}
	return time.Time{}, false
}
