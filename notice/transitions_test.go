package notice

import (
	"encoding/json"
	"testing"
)

// The transition table names every status, and only statuses.
func TestTransitionsCoverStatuses(t *testing.T) {
	t.Parallel()
	known := map[Status]bool{}
	for _, s := range Statuses {
		known[s] = true
		if _, ok := transitions[s]; !ok {
			t.Errorf("status %s has no row in transitions", s)
		}
	}
	for from, tos := range transitions {
		if !known[from] {
			t.Errorf("transitions has a row for unknown status %q", from)
		}
		for _, to := range tos {
			if !known[to] {
				t.Errorf("%s → unknown status %q", from, to)
			}
			if to == from {
				t.Errorf("%s → itself listed", from)
			}
		}
	}
	if Status("delivered").CanBecome("delivered") {
		t.Error("an unknown status may stay as it is")
	}
	for _, s := range Statuses {
		// Nothing becomes pending again but a claim handed back or a held refusal,
		// and nothing final is entered from nowhere.
		if !s.Final() && len(transitions[s]) == 0 {
			t.Errorf("open status %s can never finish", s)
		}
	}
}

// Counts spells each status as its JSON field and in Get/Set: the same names.
func TestCountsSpellEveryStatus(t *testing.T) {
	t.Parallel()
	for i, s := range Statuses {
		var c Counts
		c.Set(s, int64(i+1))
		if c.Get(s) != int64(i+1) {
			t.Fatalf("Counts.Get(%s) does not read Counts.Set", s)
		}
		b, _ := json.Marshal(c)
		var m map[string]int64
		json.Unmarshal(b, &m)
		if m[string(s)] != int64(i+1) {
			t.Fatalf("Counts.Set(%s) shows in JSON as %s", s, b)
		}
	}
}
