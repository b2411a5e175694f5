package metrics

import "testing"

// TestReplyLabels: 550 5.1.1 and 550 5.7.1 are different series, and a
// server answering nonsense cannot make series without bound.
func TestReplyLabels(t *testing.T) {
	for _, tc := range []struct {
		code                int
		enhanced            string
		class, wantC, wantE string
	}{
		{250, "2.0.0", "2xx", "250", "2.0.0"},
		{550, "5.1.1", "5xx", "550", "5.1.1"},
		{550, "5.7.1", "5xx", "550", "5.7.1"},
		{451, "4.7.1", "4xx", "451", "4.7.1"},
		{421, "", "4xx", "421", "none"},
		{0, "", "none", "none", "none"},
		{550, "5.01.001", "5xx", "550", "5.1.1"},  // normalised
		{550, "4.1.1", "5xx", "550", "other"},     // class disagrees with the code
		{550, "5.9.1", "5xx", "550", "other"},     // no such subject
		{550, "5.1.12345", "5xx", "550", "other"}, // detail out of range
		{550, "5.1.x", "5xx", "550", "other"},     // not a number
		{999, "9.9.9", "other", "other", "other"}, // not a reply code
		{554, "5.7.1", "5xx", "554", "5.7.1"},
		{569, "5.7.1", "other", "other", "other"}, // second digit above 5
		{123, "1.2.3", "other", "other", "other"}, // 1xx never ends a transaction
	} {
		class, c, e := ReplyLabels(tc.code, tc.enhanced)
		if class != tc.class || c != tc.wantC || e != tc.wantE {
			t.Errorf("ReplyLabels(%d, %q) = %s %s %s, want %s %s %s", tc.code, tc.enhanced, class, c, e, tc.class, tc.wantC, tc.wantE)
		}
	}
}
