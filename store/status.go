package store

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/oshirase/oshirase/notice"
)

// Status codes as stored in the one-byte-per-recipient status string. 0 is
// pending so that SETRANGE's zero padding means "pending" for free. The
// codes are on disk: never renumber them, only append.
const (
	codePending    = 0
	codeSending    = 1
	codeRetrying   = 2
	codeSent       = 3
	codeFailed     = 4
	codeSuppressed = 5
	codeCancelled  = 6
	codeBounced    = 7 // after sent: a DSN said it failed
	codeComplained = 8 // after sent: an ARF complaint
)

// codeStatus maps a stored code to its status: the one place codes and
// names meet. The Lua scripts get their names, codes and allowed moves
// from it (luaStatus); TestStatusCodes checks it covers notice.Statuses.
var codeStatus = [...]notice.Status{
	codePending: notice.StatusPending, codeSending: notice.StatusSending, codeRetrying: notice.StatusRetrying,
	codeSent: notice.StatusSent, codeFailed: notice.StatusFailed, codeSuppressed: notice.StatusSuppressed,
	codeCancelled: notice.StatusCancelled, codeBounced: notice.StatusBounced, codeComplained: notice.StatusComplained,
}

// ErrUnknownStatus is a status code or name the state machine does not
// know: corrupt data or a newer version's status, never read as pending
// (which would be sent).
var ErrUnknownStatus = errors.New("unknown recipient status")

// ErrBadTransition is a status move the state machine does not allow
// (notice.Status.CanBecome).
var ErrBadTransition = errors.New("recipient status move not allowed")

func statusOf(b byte) (notice.Status, error) {
	if int(b) < len(codeStatus) {
		return codeStatus[b], nil
	}
	return "", fmt.Errorf("status code %d: %w", b, ErrUnknownStatus)
}

func codeOf(s notice.Status) (int, error) {
	for i, st := range codeStatus {
		if st == s {
			return i, nil
		}
	}
	return 0, fmt.Errorf("status %q: %w", s, ErrUnknownStatus)
}

// luaStatus is the head of every script that reads or writes recipient
// statuses, generated from codeStatus and notice's transitions so that no
// script spells a code:
//
//	ST.<name>     the code of a status (ST.sent == 3)
//	NAMES[code]   its name, the counts hash field
//	isfinal(c)    notice.Status.Final
//	canmove(c,n)  notice.Status.CanBecome, checked by setst on every write
//
// FINAL and MOVES are strings of '0'/'1' flags (MOVES: row c, column n),
// constants the script's compiled body shares between calls, so the hot
// path allocates no tables for them.
var luaStatus = genLuaStatus()

func genLuaStatus() string {
	n := len(codeStatus)
	var names, st []string
	final := make([]byte, n)
	moves := make([]byte, n*n)
	for c, s := range codeStatus {
		names = append(names, "'"+string(s)+"'")
		st = append(st, string(s)+"="+strconv.Itoa(c))
		final[c] = flag(s.Final())
		for m, t := range codeStatus {
			moves[c*n+m] = flag(s.CanBecome(t))
		}
	}
	return fmt.Sprintf(`local NSTATUS = %d
local NAMES = {[0]=%s}
local ST = {%s}
local FINAL = '%s'
local MOVES = '%s'
local function isfinal(c) return string.byte(FINAL, c + 1) == 49 end
local function canmove(c, new) return string.byte(MOVES, c * NSTATUS + new + 1) == 49 end
`, n, strings.Join(names, ","), strings.Join(st, ","), final, moves)
}

func flag(b bool) byte {
	if b {
		return '1'
	}
	return '0'
}

// checkMoves returns ErrBadTransition unless every status in from may
// become to.
func checkMoves(from []notice.Status, to notice.Status) error {
	for _, f := range from {
		if !f.CanBecome(to) {
			return fmt.Errorf("%s → %s: %w", f, to, ErrBadTransition)
		}
	}
	return nil
}

// scriptStatusError maps the state machine's errors raised inside a
// script (UNKNOWNSTATUS, BADTRANSITION) to ErrUnknownStatus and
// ErrBadTransition; other errors are returned as they are.
func scriptStatusError(err error) error {
	if err == nil {
		return nil
	}
	msg := strings.TrimPrefix(err.Error(), "ERR ")
	switch {
	case strings.HasPrefix(msg, "UNKNOWNSTATUS"):
		return fmt.Errorf("%s: %w", msg, ErrUnknownStatus)
	case strings.HasPrefix(msg, "BADTRANSITION"):
		return fmt.Errorf("%s: %w", msg, ErrBadTransition)
	}
	return err
}
