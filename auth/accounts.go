package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/oshirase/oshirase/store"
)

// Directory is where managed accounts live (a *store.Store).
type Directory interface {
	AccountByKey(ctx context.Context, hash string) (*store.Account, error)
	Account(ctx context.Context, name string) (*store.Account, error)
	TouchAccount(ctx context.Context, name string, t time.Time) error
}

// UseAccounts makes k accept the keys of the accounts in d besides the keys
// of OSHIRASE_API_KEYS. Each request reads its account from d: nothing is
// cached, so a disabled account, a rotated key or a new role is in force at
// once on every process.
func (k *Keys) UseAccounts(d Directory) { k.accounts = d }

// Accounts returns the directory set by UseAccounts (nil if none).
func (k *Keys) Accounts() Directory { return k.accounts }

// ErrDisabled is an account that exists but is disabled.
var ErrDisabled = errors.New("the account is disabled")

// lookup finds the key presented: OSHIRASE_API_KEYS first (in memory), then
// the accounts. A disabled account's key is ErrBadKey like a wrong one.
// Errors other than ErrBadKey are Redis failing.
func (k *Keys) lookup(ctx context.Context, secret string) (*Key, error) {
	if key, ok := k.Find(secret); ok {
		return key, nil
	}
	if k.accounts == nil {
		return nil, ErrBadKey
	}
	h := sha256.Sum256([]byte(secret))
	a, err := k.accounts.AccountByKey(ctx, hex.EncodeToString(h[:]))
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrBadKey
	}
	if err != nil {
		return nil, err
	}
	if a.Disabled {
		return nil, ErrBadKey
	}
	k.touch(ctx, a.Name)
	return accountKey(a), nil
}

func accountKey(a *store.Account) *Key {
	key := &Key{Name: a.Name, Role: Role(a.Role), Account: a}
	if b, err := hex.DecodeString(a.KeyHash); err == nil && len(b) == 32 {
		copy(key.hash[:], b)
	}
	return key
}

// Resolve returns the key or account called name, as it is now: the
// console's sessions hold a name and resolve it on every request, so that a
// key removed from OSHIRASE_API_KEYS, or an account disabled or deleted,
// ends its sessions at once. ErrBadKey when there is none, ErrDisabled for
// a disabled account.
func (k *Keys) Resolve(ctx context.Context, name string) (*Key, error) {
	if key, ok := k.ByName(name); ok {
		return key, nil
	}
	if k.accounts == nil {
		return nil, ErrBadKey
	}
	a, err := k.accounts.Account(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrBadKey
	}
	if err != nil {
		return nil, err
	}
	if a.Disabled {
		return nil, ErrDisabled
	}
	k.touch(ctx, a.Name)
	return accountKey(a), nil
}

// EnvAdmins counts the admin keys of OSHIRASE_API_KEYS: while there is one,
// no account is the last admin.
func (k *Keys) EnvAdmins() int {
	n := 0
	for _, key := range k.keys {
		if key.Role == RoleAdmin {
			n++
		}
	}
	return n
}

// touchEvery is how often an account's last use is written at most (per
// process): "last used" to the minute costs one write a minute per active
// account, not one per request.
const touchEvery = time.Minute

// lastUsed remembers when each account's last use was last written.
type lastUsed struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (k *Keys) touch(ctx context.Context, name string) {
	now := time.Now()
	k.touched.mu.Lock()
	if now.Sub(k.touched.last[name]) < touchEvery {
		k.touched.mu.Unlock()
		return
	}
	if k.touched.last == nil || len(k.touched.last) > 10000 { // bounded
		k.touched.last = map[string]time.Time{}
	}
	k.touched.last[name] = now
	k.touched.mu.Unlock()
	if err := k.accounts.TouchAccount(context.WithoutCancel(ctx), name, now); err != nil {
		slog.Warn("account last use not recorded", "account", name, "err", err)
	}
}

// ParseRole returns the role named s, or an error saying which roles exist.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleAdmin, RoleSupport, RoleOperator:
		return r, nil
	}
	return "", fmt.Errorf("role %q is not admin, support or operator", s)
}

var accountName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$`)

// CheckAccountName says what is wrong with an account name, or "".
func (k *Keys) CheckAccountName(name string) string {
	if !accountName.MatchString(name) {
		return "1 to 64 letters, digits and . _ @ + -, starting with a letter or digit"
	}
	if _, ok := k.ByName(name); ok {
		return "a key of OSHIRASE_API_KEYS has this name"
	}
	return ""
}

// NewSecret returns a new API key and its SHA-256 hex, which is all that is
// stored. The key is 256 random bits: no one can search for a key with a
// given hash, so a fast hash is enough (a slow one, bcrypt or Argon2, is
// for passwords people choose) and one lookup finds the account.
func NewSecret() (secret, hash string) {
	secret = "osk_" + randomString()
	return secret, HashKey(secret)
}

// randomString is 256 random bits, base64url.
func randomString() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}
