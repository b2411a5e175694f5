package ingest

import (
	"strings"
	"testing"
)

func TestLooksLikeCardNumber(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s    string
		want bool
	}{
		// Test PANs of the brands, as people write them.
		{"4111111111111111", true},
		{"4111 1111 1111 1111", true},
		{"4111-1111-1111-1111", true},
		{"378282246310005", true},   // Amex, 15
		{"3782 822463 10005", true}, // Amex grouping 4-6-5
		{"3622-720627-1667", true},  // Diners 14, 4-6-4
		{"3530111333300000", true},  // JCB
		{"6011000990139424", true},  // Discover
		{"4222222222222", true},     // 13 digits
		{"4000000000006", true},     // 13 digits
		{"6011000000000000001", true},
		{"4000 0000 0000 0000 006", true}, // 19 digits, 4-4-4-4-3
		{"card: 4111-1111-1111-1111.", true},
		{"カード番号4111111111111111です", true},
		{"４１１１１１１１１１１１１１１１", true},
		{"４１１１　１１１１　１１１１　１１１１", true},
		{"４１１１－１１１１－１１１１－１１１１", true},
		// Written to get past a filter, or pasted from elsewhere.
		{"4111  1111 1111 1111", true},
		{"4111 - 1111 - 1111 - 1111", true},
		{"4111.1111.1111.1111", true},
		{"4111/1111/1111/1111", true},
		{"4111,1111,1111,1111", true},
		{"4111_1111_1111_1111", true},
		{"4111\t1111\t1111\t1111", true},
		{"4111\u00a01111\u00a01111\u00a01111", true},
		{"４１１１．１１１１．１１１１．１１１１", true},
		{"3782.822463.10005", true},
		// Inside longer runs: with the expiry, after a date, after a number.
		{"4111 1111 1111 1111 12/25", true},
		{"4111111111111111 12 25", true},
		{"2019-05-28 4111-1111-1111-1111", true},
		{"No. 12 4111 1111 1111 1111", true},

		// Not card numbers.
		{"", false},
		{"4111111111111112", false}, // fails Luhn
		{"4111 1111 1111 1112", false},
		{"411111111116", false},            // 12 digits, passes Luhn
		{"41111111111111110000", false},    // 20 digits
		{"4111111111111111000", false},     // 19 digits, fails Luhn
		{"2009/05/01 - 2019/05/27", false}, // 16 digits, Luhn-valid as a run; dates, not a card's shape
		{"2009/05/01 - 2019/05/25", false},
		{"1,234,567,890,128", false}, // an amount, Luhn-valid as a run
		{"090-1234-5678", false},
		{"+81 90 1234 5678", false},
		{"090-1234-5678 03-1234-5678", false}, // passes Luhn as one 21-digit run; no card shape
		{"2019-05-28 03-1234-5678", false},
		{"〒100-0001 東京都千代田区千代田1-1-1 03-1234-5678", false},
		{"C0000001", false},
		{"customer0000001@example.jp", false},
		{strings.Repeat("1", 200), false},
		{strings.Repeat("1234 ", 50), false},
	}
	for _, tt := range tests {
		if got := LooksLikeCardNumber(tt.s); got != tt.want {
			t.Errorf("LooksLikeCardNumber(%q) = %v, want %v", tt.s, got, tt.want)
		}
	}
}

// TestCardWindowsFollowLuhn checks the windowed rule against a brute force
// over group shapes: a card-shaped window is found wherever it sits in a run.
func TestCardWindowsFollowLuhn(t *testing.T) {
	t.Parallel()
	pan := "4111 1111 1111 1111"
	for _, pre := range []string{"", "1 ", "12 ", "123 ", "1234 ", "12345 ", "1234 5678 ", "1-2-3-"} {
		for _, post := range []string{"", " 1", " 12", " 123", " 1234", " 12345", "-0-0"} {
			s := pre + pan + post
			if !LooksLikeCardNumber(s) {
				t.Errorf("LooksLikeCardNumber(%q) = false", s)
			}
		}
	}
}

func BenchmarkLooksLikeCardNumber(b *testing.B) {
	fields := []string{"customer0000001@example.jp", "山田 太郎", "C0000001", "VISA", "1234", "090-1234-5678", "2019-05-28 03-1234-5678 ご連絡先"}
	for b.Loop() {
		for _, f := range fields {
			if LooksLikeCardNumber(f) {
				b.Fatal(f)
			}
		}
	}
}

// TestCardNumberUnicodeSeparators: digits kept apart by Unicode spaces,
// invisible format characters or any punctuation or symbol are still a card
// number (issue 13); what the detector must not take for one stays clear.
func TestCardNumberUnicodeSeparators(t *testing.T) {
	t.Parallel()
	join := func(sep string) string {
		return "4111" + sep + "1111" + sep + "1111" + sep + "1111"
	}
	for _, sep := range []string{
		"\u2009", "\u202f", "\u2002", "\u205f", // thin, narrow no-break, en, medium mathematical space
		"\u200b", "\u200c", "\u200d", "\u2060", "\u00ad", "\ufeff", // zero-width space/non-joiner/joiner, word joiner, soft hyphen, BOM
		"、", "〜", "～", "+", ":", "*", "#", "|", "'", "()", "・", "‧", "•", "~", "=", "＋", "｜", "＊", "／", "\\", "^",
		" \u200b", "\u200b-\u200b",
	} {
		if s := join(sep); !LooksLikeCardNumber(s) {
			t.Errorf("LooksLikeCardNumber(%+q) = false", s)
		}
	}
	for _, s := range []string{
		"4\u200b1\u200b1\u200b1\u200b1\u200b1\u200b1\u200b1\u200b1\u200b1\u200b1\u200b1\u200b1\u200b1\u200b1\u200b1", // a zero-width space between every digit
		"4\u0301111111111111111", // a combining mark on a digit
		"𝟒𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏",                                     // mathematical bold digits (NFKC makes them ASCII)
		"お客様のカード番号は4111\u2009\u20091111\u20091111\u20091111です", // thin spaces, two in a row
	} {
		if !LooksLikeCardNumber(s) {
			t.Errorf("LooksLikeCardNumber(%+q) = false", s)
		}
	}
	for _, s := range []string{
		"2019/05/28 12:34:56",
		"2009年05月01日〜2019年05月27日",
		"2009/05/01〜2019/05/27",
		"¥1,234,567,890,128",
		"TEL: 090-1234-5678 / FAX: 03-1234-5678",
		"+81 (90) 1234-5678",
		"営業時間 9:00〜18:00 (土日祝を除く) 0120-123-456",
		"#12345 | 2019-05-28 | 03-1234-5678",
		"1,234円 × 12 = 14,808円",
		"4111\u2009\u2009\u2009\u20091111", // 8 digits
	} {
		if LooksLikeCardNumber(s) {
			t.Errorf("LooksLikeCardNumber(%+q) = true", s)
		}
	}
}

func TestMaskCardNumbers(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, want string }{
		{"no number here", "no number here"},
		{"call 090-1234-5678", "call 090-1234-5678"},
		{`unknown template "4111-1111-1111-1111"`, `unknown template "****-****-****-****"`},
		{"a 4111\u200b1111\u200b1111\u200b1111 b 12", "a **************** b 12"},
		{"x ４１１１ １１１１ １１１１ １１１１ and 4111.1111.1111.1111", "x **** **** **** **** and ****.****.****.****"},
	} {
		got := MaskCardNumbers(tt.in)
		if got != tt.want {
			t.Errorf("MaskCardNumbers(%+q) = %+q, want %+q", tt.in, got, tt.want)
		}
		if LooksLikeCardNumber(got) {
			t.Errorf("MaskCardNumbers(%+q) still holds a card number: %+q", tt.in, got)
		}
	}
}
