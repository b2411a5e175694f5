package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Accounts: people (and machines) an admin manages through /v1/accounts and
// the console, besides the fixed keys of OSHIRASE_API_KEYS. Every key shares
// the hash tag {acct}, so the scripts below stay legal in a Redis Cluster.
//
//	<p>:{acct}:names      ZSET  account name → created (unix ms)
//	<p>:{acct}:a:<name>   HASH  role, disabled ("1"), created (ms), by, key (SHA-256 hex of
//	                            its API key, "" for none), sub (OIDC issuer+subject), last_used (ms)
//	<p>:{acct}:bykey      HASH  key SHA-256 hex → account name (authentication: one HGET)
//	<p>:{acct}:bysub      HASH  OIDC issuer+subject → account name
//	<p>:{acct}:admins     SET   enabled admin accounts (so the last one is never removed)
//
// Nothing is cached in a process: every request reads its account, so a
// change is in force on every process with the next request.
func (k keys) accounts() []string {
	b := k.p + ":{acct}:"
	return []string{b + "names", "", b + "bykey", b + "admins", b + "bysub"}
}

func (k keys) account(name string) string { return k.p + ":{acct}:a:" + name }

// acctKeys returns KEYS[1..5] of the account scripts for name.
func (s *Store) acctKeys(name string) []string {
	ks := s.k.accounts()
	ks[1] = s.k.account(name)
	return ks
}

// Account is one managed account. KeyHash and Subject are never shown.
type Account struct {
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	Disabled  bool       `json:"disabled"`
	CreatedAt time.Time  `json:"created_at"`
	CreatedBy string     `json:"created_by"`
	LastUsed  *time.Time `json:"last_used_at"`
	KeyHash   string     `json:"-"` // SHA-256 hex of its API key; "" when it has none
	Subject   string     `json:"-"` // OIDC issuer and subject; "" when not from OIDC
}

// Errors of account changes.
var (
	ErrAccountExists = errors.New("an account of that name exists")
	ErrLastAdmin     = errors.New("this would leave no enabled admin")
)

// createAccountScript adds an account.
//
//	KEYS[1] names  KEYS[2] the account  KEYS[3] bykey  KEYS[4] admins  KEYS[5] bysub
//	ARGV[1] name  ARGV[2] role  ARGV[3] created (ms)  ARGV[4] created by
//	ARGV[5] key SHA-256 hex or ""  ARGV[6] OIDC subject or ""
//	returns 1 created, 0 the name is taken
var createAccountScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[2], 'role', ARGV[2], 'created', ARGV[3], 'by', ARGV[4], 'key', ARGV[5], 'sub', ARGV[6])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[3], ARGV[5], ARGV[1]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[5], ARGV[6], ARGV[1]) end
if ARGV[2] == 'admin' then redis.call('SADD', KEYS[4], ARGV[1]) end
return 1
`)

// changeAccountScript makes one change to an account. A change that takes
// the last enabled admin account away (disable, another role, delete) is
// refused unless other admins exist outside Redis (ARGV[4], the admin keys
// of OSHIRASE_API_KEYS): checked and done in one step, so two admins
// disabling each other at once cannot both succeed.
//
//	KEYS[1] names  KEYS[2] the account  KEYS[3] bykey  KEYS[4] admins  KEYS[5] bysub
//	ARGV[1] name  ARGV[2] op: role | disable | enable | rotate | delete
//	ARGV[3] the new role (role) or key SHA-256 hex (rotate)  ARGV[4] other admins (count)
//	returns {1, before} done (before: the old role for role), {0, ""} no change,
//	        {-1, ""} no such account, {-2, ""} it is the last admin
var changeAccountScript = redis.NewScript(`
local a = redis.call('HMGET', KEYS[2], 'role', 'disabled', 'key', 'sub')
local role, disabled, key, sub = a[1], a[2] == '1', a[3] or '', a[4] or ''
if not role then return {-1, ''} end
local op = ARGV[2]
local isAdmin = role == 'admin' and not disabled
local staysAdmin = isAdmin
if op == 'disable' or op == 'delete' or (op == 'role' and ARGV[3] ~= 'admin') then staysAdmin = false end
if isAdmin and not staysAdmin and redis.call('SCARD', KEYS[4]) <= 1 and tonumber(ARGV[4]) < 1 then
  return {-2, ''}
end
if op == 'role' then
  if role == ARGV[3] then return {0, ''} end
  redis.call('HSET', KEYS[2], 'role', ARGV[3])
  if ARGV[3] == 'admin' and not disabled then redis.call('SADD', KEYS[4], ARGV[1]) else redis.call('SREM', KEYS[4], ARGV[1]) end
  return {1, role}
elseif op == 'disable' then
  if disabled then return {0, ''} end
  redis.call('HSET', KEYS[2], 'disabled', '1')
  redis.call('SREM', KEYS[4], ARGV[1])
elseif op == 'enable' then
  if not disabled then return {0, ''} end
  redis.call('HDEL', KEYS[2], 'disabled')
  if role == 'admin' then redis.call('SADD', KEYS[4], ARGV[1]) end
elseif op == 'rotate' then
  if key ~= '' then redis.call('HDEL', KEYS[3], key) end
  redis.call('HSET', KEYS[2], 'key', ARGV[3])
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[1])
elseif op == 'delete' then
  if key ~= '' then redis.call('HDEL', KEYS[3], key) end
  if sub ~= '' then redis.call('HDEL', KEYS[5], sub) end
  redis.call('SREM', KEYS[4], ARGV[1])
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
end
return {1, role}
`)

// touchAccountScript records when an account was last used, if it still exists.
//
//	KEYS[1] the account  ARGV[1] unix ms
//	returns 1 recorded, 0 no such account
var touchAccountScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'last_used', ARGV[1])
return 1
`)

// CreateAccount adds a; ErrAccountExists if the name is taken.
func (s *Store) CreateAccount(ctx context.Context, a Account) error {
	n, err := createAccountScript.Run(ctx, s.rdb, s.acctKeys(a.Name), a.Name, a.Role,
		a.CreatedAt.UnixMilli(), a.CreatedBy, a.KeyHash, a.Subject).Int()
	if err != nil {
		return fmt.Errorf("create account: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("account %s: %w", a.Name, ErrAccountExists)
	}
	return nil
}

// AccountChange is one change ChangeAccount makes.
type AccountChange struct {
	Op    string // role, disable, enable, rotate, delete
	Value string // the new role, or the new key's SHA-256 hex
	// OtherAdmins counts admins that exist besides accounts (the admin
	// keys of OSHIRASE_API_KEYS): with any, no account is the last admin.
	OtherAdmins int
}

// ChangeAccount applies c to the account name. It returns whether anything
// changed and, for a role change, the role before; ErrNotFound, or
// ErrLastAdmin when it would leave no enabled admin.
func (s *Store) ChangeAccount(ctx context.Context, name string, c AccountChange) (changed bool, before string, err error) {
	res, err := changeAccountScript.Run(ctx, s.rdb, s.acctKeys(name), name, c.Op, c.Value, c.OtherAdmins).Slice()
	if err != nil {
		return false, "", fmt.Errorf("account %s: %s: %w", name, c.Op, err)
	}
	code, _ := res[0].(int64)
	prev, _ := res[1].(string)
	switch code {
	case -1:
		return false, "", fmt.Errorf("account %s: %w", name, ErrNotFound)
	case -2:
		return false, "", fmt.Errorf("account %s: %w", name, ErrLastAdmin)
	}
	return code == 1, prev, nil
}

// Account returns the account name, or ErrNotFound.
func (s *Store) Account(ctx context.Context, name string) (*Account, error) {
	m, err := s.rdb.HGetAll(ctx, s.k.account(name)).Result()
	if err != nil {
		return nil, fmt.Errorf("read account: %w", err)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("account %s: %w", name, ErrNotFound)
	}
	return accountFrom(name, m), nil
}

func accountFrom(name string, m map[string]string) *Account {
	a := &Account{Name: name, Role: m["role"], Disabled: m["disabled"] == "1", CreatedBy: m["by"],
		KeyHash: m["key"], Subject: m["sub"]}
	if ms, err := strconv.ParseInt(m["created"], 10, 64); err == nil {
		a.CreatedAt = time.UnixMilli(ms).UTC()
	}
	if ms, err := strconv.ParseInt(m["last_used"], 10, 64); err == nil {
		t := time.UnixMilli(ms).UTC()
		a.LastUsed = &t
	}
	return a
}

// accountByKeyScript finds an account by its key's hash in one round trip
// (it runs on every request of an account). The account's key is built
// here from ARGV[2]: it has the hash tag {acct} like KEYS[1], so it is in
// the same Cluster slot.
//
//	KEYS[1] bykey  ARGV[1] key SHA-256 hex  ARGV[2] "<p>:{acct}:a:"
//	returns {name, field, value, …} (HGETALL of the account), or {} if none
//	        or the account no longer holds that key
var accountByKeyScript = redis.NewScript(`
local name = redis.call('HGET', KEYS[1], ARGV[1])
if not name then return {} end
local k = ARGV[2] .. name
if redis.call('HGET', k, 'key') ~= ARGV[1] then return {} end
local out = redis.call('HGETALL', k)
table.insert(out, 1, name)
return out
`)

// AccountByKey returns the account whose API key has the SHA-256 hex hash,
// or ErrNotFound (disabled accounts too: the caller decides).
func (s *Store) AccountByKey(ctx context.Context, hash string) (*Account, error) {
	res, err := accountByKeyScript.Run(ctx, s.rdb, []string{s.k.accounts()[2]}, hash, s.k.account("")).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("find account: %w", err)
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("account: %w", ErrNotFound)
	}
	m := make(map[string]string, len(res)/2)
	for i := 1; i+1 < len(res); i += 2 {
		m[res[i]] = res[i+1]
	}
	return accountFrom(res[0], m), nil
}

// AccountBySubject returns the account an OIDC subject signed in as, or
// ErrNotFound.
func (s *Store) AccountBySubject(ctx context.Context, subject string) (*Account, error) {
	return s.accountBy(ctx, 4, subject, func(a *Account) string { return a.Subject })
}

// accountBy looks v up in the index accounts()[idx], then reads the
// account and checks that it still holds v (field).
func (s *Store) accountBy(ctx context.Context, idx int, v string, field func(*Account) string) (*Account, error) {
	name, err := s.rdb.HGet(ctx, s.k.accounts()[idx], v).Result()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("account: %w", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("find account: %w", err)
	}
	a, err := s.Account(ctx, name)
	if err != nil {
		return nil, err
	}
	if field(a) != v { // changed between the two reads
		return nil, fmt.Errorf("account: %w", ErrNotFound)
	}
	return a, nil
}

// Accounts lists every account, oldest first.
func (s *Store) Accounts(ctx context.Context) ([]Account, error) {
	names, err := s.rdb.ZRange(ctx, s.k.accounts()[0], 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(names))
	for i, n := range names {
		cmds[i] = pipe.HGetAll(ctx, s.k.account(n))
	}
	if len(names) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("read accounts: %w", err)
		}
	}
	out := make([]Account, 0, len(names))
	for i, n := range names {
		if m := cmds[i].Val(); len(m) > 0 {
			out = append(out, *accountFrom(n, m))
		}
	}
	return out, nil
}

// TouchAccount records that the account was used at t.
func (s *Store) TouchAccount(ctx context.Context, name string, t time.Time) error {
	if err := touchAccountScript.Run(ctx, s.rdb, []string{s.k.account(name)}, t.UnixMilli()).Err(); err != nil {
		return fmt.Errorf("account %s: last used: %w", name, err)
	}
	return nil
}
