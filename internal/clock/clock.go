// Package clock is the one source of "now" that store and worker share, so
// that tests of claims, leases and retries move time instead of sleeping
// (asynq does the same with its internal timeutil.Clock).
//
// Only instants written to Redis or compared with what is there (claim and
// lease deadlines, first-attempt times, retry ages) come from the Clock;
// local timers and timeouts stay on the real time.
package clock

import (
	"sync"
	"time"
)

// Clock tells the time.
type Clock interface {
	Now() time.Time
}

// Real is the wall clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// Sim is a clock that moves only when told: for tests.
type Sim struct {
	mu sync.Mutex
	t  time.Time
}

// NewSim returns a Sim standing at t.
func NewSim(t time.Time) *Sim { return &Sim{t: t} }

// Now returns the clock's time.
func (s *Sim) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t
}

// Advance moves the clock on by d.
func (s *Sim) Advance(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.t = s.t.Add(d)
}
