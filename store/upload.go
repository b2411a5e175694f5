package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/oshirase/oshirase/notice"
)

// A campaign's latest upload lives in its state hash (fields upload_*), so
// that GET of the campaign says how far it got even when the client never
// saw the answer. Every field is written after the rows it speaks of: a
// write that fails (Redis out of memory) leaves it behind, never ahead, and
// a client resuming from it sends some rows twice, which the address check
// turns away as duplicates, but never skips one.

// BeginUpload records that upload id has started.
func (s *Store) BeginUpload(ctx context.Context, cid, id string) error {
	now := ms(s.Now())
	err := s.rdb.HSet(ctx, s.k.campaign(cid).state, "upload_id", id, "upload_state", notice.UploadRunning,
		"upload_started_at", now, "upload_updated_at", now, "upload_line", 0, "upload_accepted", 0, "upload_rejected", 0, "upload_error", "").Err()
	if err != nil {
		return fmt.Errorf("begin upload of %s: %w", cid, err)
	}
	return nil
}

// UploadProgress records that every line through line is stored or
// rejected, with the upload's rejections so far (AddUploadRows counts the
// accepted ones). For a batch with rows it only repeats what AddUploadRows
// wrote; a batch of rejections alone moves the line on here.
func (s *Store) UploadProgress(ctx context.Context, cid string, line int, rejected int64) error {
	err := s.rdb.HSet(ctx, s.k.campaign(cid).state, "upload_line", line,
		"upload_rejected", rejected, "upload_updated_at", ms(s.Now())).Err()
	if err != nil {
		return fmt.Errorf("upload progress of %s: %w", cid, err)
	}
	return nil
}

// EndUpload records how the upload ended (notice.Upload* state) and why,
// for one that did not complete (a message for the uploader, no internals).
func (s *Store) EndUpload(ctx context.Context, cid, state, why string) error {
	err := s.rdb.HSet(ctx, s.k.campaign(cid).state, "upload_state", state, "upload_error", why, "upload_updated_at", ms(s.Now())).Err()
	if err != nil {
		return fmt.Errorf("end upload of %s: %w", cid, err)
	}
	return nil
}

func uploadOf(st map[string]string) *notice.Upload {
	if st["upload_id"] == "" {
		return nil
	}
	u := &notice.Upload{ID: st["upload_id"], State: st["upload_state"], Error: st["upload_error"]}
	if t := fromMS(st["upload_started_at"]); t != nil {
		u.StartedAt = *t
	}
	if t := fromMS(st["upload_updated_at"]); t != nil {
		u.UpdatedAt = *t
	}
	u.StoredThroughLine, _ = strconv.Atoi(st["upload_line"])
	u.Accepted, _ = strconv.ParseInt(st["upload_accepted"], 10, 64)
	u.Rejected, _ = strconv.ParseInt(st["upload_rejected"], 10, 64)
	return u
}

// RejectionCount is how many rejections had one field and error.
type RejectionCount struct {
	Field string `json:"field"`
	Error string `json:"error"`
	Count int64  `json:"count"`
}

// maxRejectionKinds bounds the distinct (field, error) pairs counted per
// campaign; the rest are counted under field "" and error "other".
const maxRejectionKinds = 200

// countScript adds rejection counts to the campaign's summary hash,
// keeping it bounded.
// KEYS: 1 rejection counts hash. ARGV: pairs of (field "\t" error, count),
// then the most kinds to keep. Returns 1.
var countScript = redis.NewScript(`
for i = 1, #ARGV - 1, 2 do
  local k = ARGV[i]
  if redis.call('HEXISTS', KEYS[1], k) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[#ARGV]) then
    k = '\tother'
  end
  redis.call('HINCRBY', KEYS[1], k, ARGV[i+1])
end
return 1
`)

// AddRejections keeps rejections of an upload: full holds the ones kept in
// full (JSON; the API keeps the first thousand of each upload), counts
// every rejection by field and error. Both go in one transaction.
func (s *Store) AddRejections(ctx context.Context, cid string, full []string, counts []RejectionCount) error {
	if len(full) == 0 && len(counts) == 0 {
		return nil
	}
	ck := s.k.campaign(cid)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		if len(full) > 0 {
			vals := make([]any, len(full))
			for i := range full {
				vals[i] = full[i]
			}
			p.RPush(ctx, ck.rej, vals...)
		}
		if len(counts) > 0 {
			args := make([]any, 0, 2*len(counts)+1)
			for _, c := range counts {
				args = append(args, c.Field+"\t"+c.Error, c.Count)
			}
			args = append(args, maxRejectionKinds)
			countScript.Eval(ctx, p, []string{ck.rejCounts}, args...) // EVAL: a transaction cannot fall back from EVALSHA
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rejections of %s: %w", cid, err)
	}
	return nil
}

// RejectionCounts returns a campaign's rejections counted by field and
// error, most frequent first.
func (s *Store) RejectionCounts(ctx context.Context, cid string) ([]RejectionCount, error) {
	m, err := s.rdb.HGetAll(ctx, s.k.campaign(cid).rejCounts).Result()
	if err != nil {
		return nil, fmt.Errorf("rejection counts of %s: %w", cid, err)
	}
	out := make([]RejectionCount, 0, len(m))
	for k, v := range m {
		f, e, _ := strings.Cut(k, "\t")
		n, _ := strconv.ParseInt(v, 10, 64)
		out = append(out, RejectionCount{Field: f, Error: e, Count: n})
	}
	SortRejectionCounts(out)
	return out, nil
}

// SortRejectionCounts orders counts most frequent first, then by field
// and error.
func SortRejectionCounts(rc []RejectionCount) {
	slices.SortFunc(rc, func(a, b RejectionCount) int {
		if a.Count != b.Count {
			if a.Count > b.Count {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Field+"\t"+a.Error, b.Field+"\t"+b.Error)
	})
}

// advanceIndexScript moves index_through (the highest recipient id up to
// which every recipient is in the look-up index) to ARGV[2] when the batch
// just indexed, from ARGV[1], follows on from it. A batch indexed out of
// order leaves it behind: RepairIndex then indexes again (harmlessly) what
// lies beyond.
// KEYS: 1 state. ARGV: 1 first id of the batch, 2 last id. Returns 1 if moved.
var advanceIndexScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'index_through')
if not cur then return 0 end
cur = tonumber(cur)
if cur >= tonumber(ARGV[1]) - 1 and cur < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'index_through', ARGV[2])
  return 1
end
return 0
`)

// RepairIndex puts into the look-up and search indexes the recipients a failed index
// write left out (Redis out of memory between storing a batch and indexing
// it): an upload and a start call it first, so that support finds every
// recipient of a campaign that sends. It is cheap when nothing is missing.
func (s *Store) RepairIndex(ctx context.Context, cid string) error {
	ck := s.k.campaign(cid)
	v, err := s.rdb.HMGet(ctx, ck.state, "index_through", "seq").Result()
	if err != nil {
		return fmt.Errorf("index state of %s: %w", cid, err)
	}
	through, ok := v[0].(string)
	if !ok {
		return nil // a campaign from before index_through: indexed as it was stored
	}
	from, _ := strconv.ParseInt(through, 10, 64)
	seq, _ := strconv.ParseInt(fmt.Sprint(v[1]), 10, 64)
	for from++; from <= seq; from += 500 {
		to := min(from+500, seq+1)
		fields := make([]string, 0, to-from)
		for id := from; id < to; id++ {
			fields = append(fields, itoa(id))
		}
		profs, err := s.rdb.HMGet(ctx, ck.rcpt, fields...).Result()
		if err != nil {
			return fmt.Errorf("repair index of %s: %w", cid, err)
		}
		args := make([]any, 0, 2*len(fields))
		var rs []notice.Recipient
		var ids []int64
		for i, pv := range profs {
			ps, ok := pv.(string)
			if !ok {
				continue
			}
			var p profile
			if err := json.Unmarshal([]byte(ps), &p); err != nil {
				return fmt.Errorf("decode recipient %s of %s: %w", fields[i], cid, err)
			}
			args = append(args, EmailKey(p.Email), cid+":"+fields[i])
			var r notice.Recipient
			p.into(&r)
			rs, ids = append(rs, r), append(ids, from+int64(i))
		}
		if len(args) > 0 {
			if err := indexScript.Run(ctx, s.rdb, []string{s.k.emailIndex()}, args...).Err(); err != nil {
				return fmt.Errorf("repair index of %s: %w", cid, err)
			}
			if err := s.indexSearch(ctx, cid, rs, ids); err != nil {
				return fmt.Errorf("repair index of %s: %w", cid, err)
			}
		}
		if err := advanceIndexScript.Run(ctx, s.rdb, []string{ck.state}, from, to-1).Err(); err != nil {
			return fmt.Errorf("repair index of %s: %w", cid, err)
		}
	}
	return nil
}

// errIndex marks recipients stored but not indexed.
var errIndex = errors.New("look-up index not written")
