package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"

	"github.com/oshirase/oshirase/notice"
)

// The support search index finds a recipient the way a caller identifies
// themselves: by customer id, by name (as uploaded: kanji, kana or Latin
// letters), by part of an address, by phone number. Each campaign has one
// sorted set, all scores 0, whose members sort by their bytes:
//
//	<p>:{c:ID}:sx   ZSET  kind byte + folded value + "\x00" + recipient id
//
// A search is a prefix match, ZRANGE BYLEX from "[k"+q to "[k"+q+"\xff",
// per campaign: O(log N + matches) however many recipients there are, no
// scan. "Part of" a name or an address is served by indexing the value from
// each word start too ("yamada@example.jp" beside "taro.yamada@…"; "太郎"
// beside "山田太郎"), a bounded handful per recipient. The set lives under
// the campaign's hash tag, so a purge or a delete drops it with one UNLINK.

// Index kinds (the member's first byte) and the names the API reports.
const (
	kindCustomer = 'c'
	kindName     = 'n'
	kindEmail    = 'e'
	kindPhone    = 'p'
)

// SearchField names what a search matched.
func searchField(kind byte) string {
	switch kind {
	case kindCustomer:
		return "customer_id"
	case kindName:
		return "name"
	case kindEmail:
		return "email"
	case kindPhone:
		return "phone"
	}
	return ""
}

const (
	// maxEntryBytes bounds one indexed value: a query is cut to the same
	// length, so a longer value still matches by its start.
	maxEntryBytes = 48
	// maxEntries bounds the entries of one recipient (memory: docs/support.md).
	maxEntries = 12
	// maxSuffixes bounds the extra entries per name or address (word starts).
	maxSuffixes = 3
	// MaxSearchMatches is the most recipients one search gathers: more is a
	// query to narrow, not a list for a person to read.
	MaxSearchMatches = 200
	// MaxQueryRunes bounds a query.
	MaxQueryRunes = 200
	// minQueryRunes is the shortest query: three Latin letters or digits,
	// two when it holds kana or kanji (a character of a Japanese name says
	// more than a letter); one character is never a search.
	minQueryRunes, minQueryRunesCJK = 3, 2
	// minPhoneDigits is the fewest digits a phone query matches with.
	minPhoneDigits = 4
)

// ErrQuery is a search query that is refused (too short, too long).
type ErrQuery struct{ Msg string }

func (e *ErrQuery) Error() string { return e.Msg }

// Name-like and phone-like extra columns are indexed with the name and
// phone: an upload names them as its source system does.
func nameColumn(col string) bool {
	col = strings.ToLower(col)
	return strings.HasPrefix(col, "name") || strings.HasSuffix(col, "_name") || strings.Contains(col, "kana") || strings.Contains(col, "furigana")
}

func phoneColumn(col string) bool {
	col = strings.ToLower(col)
	return col == "tel" || strings.HasPrefix(col, "tel_") || strings.HasSuffix(col, "_tel") ||
		strings.Contains(col, "phone") || strings.Contains(col, "mobile")
}

// fold is the form names and customer ids are indexed and searched in:
// NFKC (full-width letters and half-width kana become ordinary ones), lower
// case, katakana as hiragana (ヤマダ and やまだ are one reading).
func fold(s string) string {
	s = strings.ToLower(norm.NFKC.String(strings.TrimSpace(s)))
	return strings.Map(func(r rune) rune {
		if r >= 'ァ' && r <= 'ヶ' {
			return r - 0x60
		}
		return r
	}, s)
}

// words splits folded text at spaces and name punctuation (・, commas).
func words(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || r == '・' || r == ',' || r == '、' || r == '.'
	})
}

func isCJK(r rune) bool {
	return unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana)
}

// cut shortens s to at most maxEntryBytes, at a character boundary.
func cut(s string) string {
	if len(s) <= maxEntryBytes {
		return s
	}
	i := maxEntryBytes
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

// nameValues is what a name is found by: the whole name without spaces,
// and from each later word on ("太郎", "yamada"); a name written without
// spaces in kana or kanji also from its later characters, so that the
// given name of "山田太郎" finds it.
func nameValues(name string) []string {
	w := words(fold(name))
	if len(w) == 0 {
		return nil
	}
	out := []string{strings.Join(w, "")}
	for i := 1; i < len(w) && len(out) <= maxSuffixes; i++ {
		out = append(out, strings.Join(w[i:], ""))
	}
	if len(w) == 1 {
		rs := []rune(w[0])
		for i := 1; i+minQueryRunesCJK <= len(rs) && len(out) <= maxSuffixes; i++ {
			if isCJK(rs[i]) {
				out = append(out, string(rs[i:]))
			}
		}
	}
	return out
}

// emailValues is what an address is found by: the whole address, and from
// each word of its local part on ("yamada@example.jp" for
// "taro.yamada@example.jp").
func emailValues(addr string) []string {
	k := EmailKey(addr)
	at := strings.LastIndexByte(k, '@')
	if at < 0 {
		return nil
	}
	out := []string{k}
	for i := 0; i < at && len(out) <= maxSuffixes; i++ {
		if strings.IndexByte(".-_+", k[i]) >= 0 && i+1 < at {
			out = append(out, k[i+1:])
		}
	}
	return out
}

// PhoneDigits is a phone number as it is indexed and searched: digits
// only, in the national form: +81 90-1234-5678, 0081 90…, 81 90… and
// 090-1234-5678 are one number. Other countries' numbers keep their
// country code.
func PhoneDigits(v string) string {
	v = strings.TrimSpace(norm.NFKC.String(v))
	intl := strings.HasPrefix(v, "+")
	var b strings.Builder
	for _, r := range v {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	d := b.String()
	if strings.HasPrefix(d, "00") && !strings.HasPrefix(d, "000") {
		d, intl = d[2:], true
	}
	// A Japanese national number starts with 0; one starting with 81 and
	// long enough for a country code is +81 written without its plus.
	if strings.HasPrefix(d, "81") && (intl || len(d) >= 11) {
		return "0" + d[2:]
	}
	return d
}

// customerValue is what a customer id is found by: folded, without spaces
// and dashes (C-00123, c00123 and Ｃ００１２３ are one id).
func customerValue(id string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || r == '-' || r == 'ー' || r == '_' {
			return -1
		}
		return r
	}, fold(id))
}

// searchMembers is the index entries of one recipient.
func searchMembers(r *notice.Recipient, rid int64) []any {
	var out []any
	id := "\x00" + itoa(rid)
	add := func(kind byte, v string) {
		v = cut(v)
		if v == "" || len(out) >= maxEntries {
			return
		}
		m := string(kind) + v + id
		if !slices.Contains(out, any(m)) {
			out = append(out, m)
		}
	}
	if v := customerValue(r.CustomerID); v != "" {
		add(kindCustomer, v)
	}
	for _, v := range emailValues(r.Email) {
		add(kindEmail, v)
	}
	names := []string{r.Name}
	var phones []string
	cols := make([]string, 0, len(r.Extra))
	for k := range r.Extra {
		cols = append(cols, k)
	}
	slices.Sort(cols) // the same entries whatever the map's order
	for _, k := range cols {
		switch {
		case nameColumn(k):
			names = append(names, r.Extra[k])
		case phoneColumn(k):
			phones = append(phones, r.Extra[k])
		}
	}
	for _, p := range phones {
		if d := PhoneDigits(p); len(d) >= minPhoneDigits {
			add(kindPhone, d)
		}
	}
	for _, n := range names {
		for _, v := range nameValues(n) {
			add(kindName, v)
		}
	}
	return out
}

// addSearch indexes recipients (ids[i] is rs[i]'s id, 0 for one not
// stored) in a campaign's search index.
func addSearch(ctx context.Context, p redis.Cmdable, key string, rs []notice.Recipient, ids []int64) {
	var members []redis.Z
	for i, id := range ids {
		if id <= 0 {
			continue
		}
		for _, m := range searchMembers(&rs[i], id) {
			members = append(members, redis.Z{Member: m})
		}
	}
	if len(members) > 0 {
		p.ZAdd(ctx, key, members...)
	}
}

// indexSearch writes the search entries of recipients just stored.
func (s *Store) indexSearch(ctx context.Context, cid string, rs []notice.Recipient, ids []int64) error {
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		addSearch(ctx, p, s.k.campaign(cid).sx, rs, ids)
		return nil
	})
	if err != nil {
		return fmt.Errorf("search index of %s: %w", cid, err)
	}
	return nil
}

// searchTerm is one (kind, prefix) a query is looked for under.
type searchTerm struct {
	kind   byte
	prefix string
}

// searchTerms turns a query into the prefixes it is looked for under, or
// refuses it (too short, too long).
func searchTerms(q string) ([]searchTerm, error) {
	q = strings.TrimSpace(q)
	f := strings.Join(words(fold(q)), "")
	n := utf8.RuneCountInString(f)
	if n > MaxQueryRunes {
		return nil, &ErrQuery{Msg: fmt.Sprintf("q is longer than %d characters", MaxQueryRunes)}
	}
	min := minQueryRunes
	if strings.IndexFunc(f, isCJK) >= 0 {
		min = minQueryRunesCJK
	}
	if n < min {
		return nil, &ErrQuery{Msg: fmt.Sprintf("q is too short: give at least %d characters (%d of kana or kanji) of a customer id, name, address or phone number", minQueryRunes, minQueryRunesCJK)}
	}
	var out []searchTerm
	add := func(kind byte, v string) {
		if v = cut(v); v != "" && !slices.Contains(out, searchTerm{kind, v}) {
			out = append(out, searchTerm{kind, v})
		}
	}
	add(kindCustomer, customerValue(q))
	add(kindName, f)
	// An address, or its start: the domain's Unicode and punycode forms
	// are one (例え.jp is xn--r8jz45g.jp, as addresses are stored).
	e := strings.ToLower(strings.TrimSpace(norm.NFKC.String(q)))
	if !strings.ContainsFunc(e, unicode.IsSpace) {
		if at := strings.LastIndexByte(e, '@'); at >= 0 {
			if d := e[at+1:]; d != "" {
				if a, err := idna.Lookup.ToASCII(d); err == nil {
					e = e[:at+1] + a
				}
			}
		}
		add(kindEmail, e)
	}
	// A phone number: digits with the usual punctuation only.
	if strings.Trim(q, "0123456789０１２３４５６７８９+-‐－ー()（） ") == "" {
		if d := PhoneDigits(q); len(d) >= minPhoneDigits {
			add(kindPhone, d)
			if d[0] != '0' && len(d) >= 9 && len(d) <= 10 {
				add(kindPhone, "0"+d) // the national number without its 0
			}
		}
	}
	return out, nil
}

// Match is one recipient a search found, and what it matched by.
type Match struct {
	Ref
	Fields []string // customer_id, name, email, phone
}

// SearchResult is what Search found: matches, newest campaign first, in
// recipient id order within a campaign.
type SearchResult struct {
	Matches []Match
	// Truncated: more than MaxSearchMatches matched; the query should be
	// narrowed.
	Truncated bool
}

// campaignBatch is how many campaigns one round trip of a search covers.
const campaignBatch = 50

// Search finds recipients of every campaign by customer id, name, part of
// an address or phone number (see searchTerms): one ZRANGE BYLEX per
// campaign and kind, pipelined, at most MaxSearchMatches results.
func (s *Store) Search(ctx context.Context, q string) (*SearchResult, error) {
	terms, err := searchTerms(q)
	if err != nil {
		return nil, err
	}
	ids, err := s.rdb.ZRevRange(ctx, s.k.campaigns(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("search: list campaigns: %w", err)
	}
	res := &SearchResult{}
	for start := 0; start < len(ids); start += campaignBatch {
		batch := ids[start:min(start+campaignBatch, len(ids))]
		cmds := make([]*redis.StringSliceCmd, 0, len(batch)*len(terms))
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, cid := range batch {
				key := s.k.campaign(cid).sx
				for _, t := range terms {
					v := string(t.kind) + t.prefix
					cmds = append(cmds, p.ZRangeByLex(ctx, key, &redis.ZRangeBy{
						Min: "[" + v, Max: "[" + v + "\xff", Count: MaxSearchMatches + 1,
					}))
				}
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("search: %w", err)
		}
		for i, cid := range batch {
			var found []Match
			for j, t := range terms {
				for _, m := range cmds[i*len(terms)+j].Val() {
					k := strings.LastIndexByte(m, 0)
					rid, err := strconv.ParseInt(m[k+1:], 10, 64)
					if k < 0 || err != nil {
						continue
					}
					at := slices.IndexFunc(found, func(x Match) bool { return x.RecipientID == rid })
					if at < 0 {
						found = append(found, Match{Ref: Ref{cid, rid}})
						at = len(found) - 1
					}
					if f := searchField(t.kind); !slices.Contains(found[at].Fields, f) {
						found[at].Fields = append(found[at].Fields, f)
					}
				}
			}
			slices.SortFunc(found, func(a, b Match) int { return int(a.RecipientID - b.RecipientID) })
			res.Matches = append(res.Matches, found...)
			if len(res.Matches) > MaxSearchMatches {
				res.Matches, res.Truncated = res.Matches[:MaxSearchMatches], true
				return res, nil
			}
		}
	}
	return res, nil
}

// SearchIndexBytes is the memory the search index of a campaign takes in
// Redis (MEMORY USAGE), for measuring what a recipient costs.
func (s *Store) SearchIndexBytes(ctx context.Context, cid string) (int64, error) {
	n, err := s.rdb.MemoryUsage(ctx, s.k.campaign(cid).sx, 0).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, err
}
