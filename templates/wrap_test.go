package templates

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestWrap(t *testing.T) {
	t.Parallel()
	ja := wrapper{max: widthJA, ambiguousWide: true}
	longJA := strings.Repeat("このたび、当社が運営する「サンプル通販」において、お客様のクレジットカード情報が流出した可能性があることが判明いたしました。", 3)
	longEN := strings.Repeat("We are very sorry to tell you that the payment card details you used at Sample Online Shop may have been exposed. ", 4)
	url := "https://www.example.co.jp/" + strings.Repeat("very-long-path/", 10) + "notice.html"
	tests := []struct {
		name   string
		locale string
		in     string
		check  func(t *testing.T, out string)
	}{
		{"short lines unchanged", "ja", "山田 太郎 様\n\n  indented   spaces kept\n", func(t *testing.T, out string) {
			if out != "山田 太郎 様\n\n  indented   spaces kept\n" {
				t.Errorf("got %q", out)
			}
		}},
		{"japanese width and kinsoku", "ja", longJA, func(t *testing.T, out string) {
			lines := strings.Split(out, "\n")
			if len(lines) < 5 {
				t.Errorf("only %d lines", len(lines))
			}
			for _, l := range lines {
				if w := ja.width(l); w > widthJA {
					t.Errorf("line %q is %d columns", l, w)
				}
				if r, _ := utf8.DecodeRuneInString(l); strings.ContainsRune(noStart, r) {
					t.Errorf("line begins with %q: %q", r, l)
				}
				if r, _ := utf8.DecodeLastRuneInString(l); strings.ContainsRune(noEnd, r) {
					t.Errorf("line ends with %q: %q", r, l)
				}
			}
			if strings.ReplaceAll(out, "\n", "") != longJA {
				t.Error("wrapping changed the text")
			}
		}},
		{"kinsoku at the break", "ja", strings.Repeat("あ", 37) + "い。」次。" + strings.Repeat("う", 32) + "「かぎ」です。", func(t *testing.T, out string) {
			want := strings.Repeat("あ", 37) + "\nい。」次。" + strings.Repeat("う", 32) + "\n「かぎ」です。"
			if out != want {
				t.Errorf("got\n%s\nwant\n%s", out, want)
			}
		}},
		{"japanese fills lines", "ja", longJA, func(t *testing.T, out string) {
			// A break may move back to a better place, but never far:
			// every line but the last is still reasonably full.
			lines := strings.Split(out, "\n")
			for _, l := range lines[:len(lines)-1] {
				if w := ja.width(l); w < 50 || w < widthJA-breakLookback-4 {
					t.Errorf("line %q is only %d columns", l, w)
				}
			}
		}},
		{"english on word boundaries", "en", longEN, func(t *testing.T, out string) {
			for _, l := range strings.Split(out, "\n") {
				if len(l) > widthEN {
					t.Errorf("line %q is %d columns", l, len(l))
				}
				if strings.HasPrefix(l, " ") || strings.HasSuffix(l, " ") {
					t.Errorf("line %q has a space at an edge", l)
				}
			}
			if strings.Join(strings.Fields(out), " ") != strings.TrimSpace(longEN) {
				t.Error("wrapping split or changed a word")
			}
		}},
		{"url kept whole", "en", "Details: " + url + " (updated daily)", func(t *testing.T, out string) {
			if !strings.Contains(out, "\n"+url+"\n") {
				t.Errorf("url not on a line of its own: %q", out)
			}
		}},
		{"url in japanese", "ja", "詳しくは当社ウェブサイトをご覧ください。" + url + "をご確認ください。", func(t *testing.T, out string) {
			if !strings.Contains(out, url) {
				t.Errorf("url split: %q", out)
			}
		}},
		{"hanging indent", "ja", "・" + longJA, func(t *testing.T, out string) {
			lines := strings.Split(out, "\n")
			for _, l := range lines[1:] {
				if !strings.HasPrefix(l, "  ") || strings.HasPrefix(l, "   ") {
					t.Errorf("continuation %q is not indented by 2", l)
				}
			}
		}},
		{"english list indent", "en", "- " + longEN, func(t *testing.T, out string) {
			for _, l := range strings.Split(out, "\n")[1:] {
				if !strings.HasPrefix(l, "  ") {
					t.Errorf("continuation %q is not indented", l)
				}
			}
		}},
		{"crlf", "en", "a\r\nb\r\n", func(t *testing.T, out string) {
			if out != "a\nb\n" {
				t.Errorf("got %q", out)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := Wrap(tt.in, tt.locale)
			for _, l := range strings.Split(out, "\n") {
				if len(l) > MaxLineOctets {
					t.Errorf("line of %d octets", len(l))
				}
			}
			tt.check(t, out)
		})
	}
}

// TestWrapOctetLimit feeds Wrap tokens no display width rule would break:
// every line must still end within MaxLineOctets, and nothing may be lost.
func TestWrapOctetLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, locale, in string
	}{
		{"ascii token", "en", strings.Repeat("x", 3000)},
		{"url", "en", "see https://example.com/?q=" + strings.Repeat("a", 2500)},
		{"closing punctuation run", "ja", "あ" + strings.Repeat("」", 700)},
		{"mixed", "ja", strings.Repeat("é", 1200)},
		{"indented", "en", "- " + strings.Repeat("y", 2000)},
		{"absurd indentation", "en", strings.Repeat(" ", 1200) + "- " + strings.Repeat("z ", 100)},
		{"absurd indentation, japanese", "ja", strings.Repeat("\u3000", 400) + "・" + strings.Repeat("あ", 100)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := Wrap(tt.in, tt.locale)
			for _, l := range strings.Split(out, "\n") {
				if len(l) > MaxLineOctets {
					t.Errorf("line of %d octets", len(l))
				}
				if !utf8.ValidString(l) {
					t.Error("line is not valid UTF-8: a character was cut")
				}
			}
			if got := strings.Join(strings.Fields(out), ""); got != strings.Join(strings.Fields(tt.in), "") {
				t.Error("text lost or changed")
			}
		})
	}
}

// TestWrapInvalidUTF8: bytes that are not UTF-8 (ingest rejects them, but a
// template override might hold some) pass through unchanged, never panic.
func TestWrapInvalidUTF8(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"abc\xffdef\n", "\xff\xfe\n", "お客様\xe3\x81様\n", strings.Repeat("あ\xff", 200) + "\n"} {
		got := Wrap(s, "ja")
		if strings.ReplaceAll(got, "\n", "") != strings.ReplaceAll(s, "\n", "") {
			t.Errorf("Wrap(%q) = %q: bytes changed", s, got)
		}
	}
}

// TestWrapBreakPlaces checks where Wrap chooses to break a line that is too
// long: the whole lines it makes, or words it must not split.
func TestWrapBreakPlaces(t *testing.T) {
	t.Parallel()
	a := func(n int) string { return strings.Repeat("あ", n) }
	tests := []struct {
		name   string
		locale string
		in     string
		want   []string // the lines, if not nil
		whole  []string // words no line break may split
	}{
		{"katakana run kept whole", "ja", a(34) + "パスワードをお送りします。",
			[]string{a(34), "パスワードをお送りします。"}, nil},
		{"break after 、", "ja", a(30) + "、かきくけこさしすせそたちつてと",
			[]string{a(30) + "、", "かきくけこさしすせそたちつてと"}, nil},
		{"break after 。", "ja", a(31) + "。かきくけこさしすせそたちつてと",
			[]string{a(31) + "。", "かきくけこさしすせそたちつてと"}, nil},
		{"not between a closing bracket and its particle", "ja", a(28) + "「サンプル通販」でクレジットカード決済",
			[]string{a(28) + "「サンプル通販」で", "クレジットカード決済"}, nil},
		{"before an opening bracket", "ja", a(30) + "かきくけ「サンプル通販」",
			[]string{a(30) + "かきくけ", "「サンプル通販」"}, nil},
		{"after a particle, before kanji", "ja", "お客様の" + a(30) + "ことが判明いたしました",
			[]string{"お客様の" + a(30) + "ことが", "判明いたしました"}, nil},
		{"not inside okurigana", "ja", a(34) + "お問い合わせください",
			[]string{a(34), "お問い合わせください"}, nil},
		{"not after the honorific ご", "ja", a(36) + "ご利用ください",
			[]string{a(36), "ご利用ください"}, nil},
		{"japanese date kept whole", "ja", a(33) + "2019年5月28日まで",
			[]string{a(33), "2019年5月28日まで"}, nil},
		{"full-width digits kept whole", "ja", a(35) + "１２３４５です",
			[]string{a(35), "１２３４５です"}, nil},
		{"latin word kept whole", "ja", a(34) + "VISAカード",
			[]string{a(34), "VISAカード"}, nil},
		{"words of real notices", "ja", "このたび、「サンプル通販」をご利用のお客様のクレジットカード情報が流出した可能性があることが判明いたしました。" +
			"2019年5月28日、当社が運営する「サンプル通販」において、第三者による不正アクセスにより、お客様のクレジットカード情報が流出した可能性があることが判明いたしました。" +
			"お手数をおかけいたしますが、2019年6月30日までに、下記のページから新しいパスワードを設定してください。" +
			"当社がメールや電話で、お客様にカード番号・有効期限・セキュリティコードをお尋ねすることは一切ございません。",
			nil, []string{"可能性", "不正アクセス", "パスワード", "お尋ね", "2019年5月28日", "2019年6月30日", "クレジットカード", "セキュリティコード", "お手数"}},
		{"english date kept whole", "en", "Customers who paid by card at Sample Online Shop between 10 July 2009 and 28 May 2019.",
			[]string{"Customers who paid by card at Sample Online Shop between 10 July 2009 and", "28 May 2019."}, nil},
		{"american date kept whole", "en", strings.Repeat("x", 61) + " on May 28, 2019 and later",
			[]string{strings.Repeat("x", 61) + " on", "May 28, 2019 and later"}, nil},
		{"english otherwise greedy", "en", "We are very sorry to tell you that the payment card details you used at Sample, Online Shop may have been exposed.",
			[]string{"We are very sorry to tell you that the payment card details you used at", "Sample, Online Shop may have been exposed."}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := Wrap(tt.in, tt.locale)
			lines := strings.Split(out, "\n")
			if tt.want != nil && strings.Join(lines, "|") != strings.Join(tt.want, "|") {
				t.Errorf("got\n%s\nwant\n%s", out, strings.Join(tt.want, "\n"))
			}
			for _, w := range tt.whole {
				if !strings.Contains(out, w) {
					t.Errorf("%q split:\n%s", w, out)
				}
			}
			sep := " "
			if tt.locale == "ja" {
				sep = ""
			}
			if strings.Join(lines, sep) != tt.in {
				t.Errorf("wrapping changed the text:\n%s", out)
			}
			w, _ := wrapperFor(tt.locale)
			for _, l := range lines {
				if n := w.width(l); n > w.max {
					t.Errorf("line %q is %d columns", l, n)
				}
			}
		})
	}
}

// TestWrapLongKatakana: a run of katakana longer than half a line may be
// broken, so that lines still keep the width.
func TestWrapLongKatakana(t *testing.T) {
	t.Parallel()
	in := strings.Repeat("ア", 100)
	out := Wrap(in, "ja")
	w, _ := wrapperFor("ja")
	for _, l := range strings.Split(out, "\n") {
		if n := w.width(l); n > widthJA {
			t.Errorf("line %q is %d columns", l, n)
		}
	}
	if strings.ReplaceAll(out, "\n", "") != in {
		t.Error("wrapping changed the text")
	}
}

// FuzzWrap checks what every wrapping keeps, whatever the line: the text
// (up to the white space at a break), the octet limit, valid UTF-8 where
// the input was, the width where no unbreakable run is wider, and kinsoku.
func FuzzWrap(f *testing.F) {
	for _, s := range []string{
		"このたび、「サンプル通販」をご利用のお客様のクレジットカード情報が流出した可能性があることが判明いたしました。",
		"・2019年5月28日、第三者による不正アクセスにより、お客様のパスワード（暗号化された状態のもの）が流出した可能性がございます。",
		"Customers who paid by card between 10 July 2009 and 28 May 2019 at Sample Online Shop, Sample Online Shop.",
		strings.Repeat("ア", 60) + "です。" + strings.Repeat("「", 40),
		"- " + strings.Repeat("word ", 40),
	} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, in string, ja bool) {
		if strings.ContainsAny(in, "\r\n") || len(in) > 4000 {
			return
		}
		locale := "en"
		if ja {
			locale = "ja"
		}
		w, _ := wrapperFor(locale)
		out := Wrap(in, locale)
		if got, want := strings.Join(strings.Fields(out), ""), strings.Join(strings.Fields(in), ""); got != want {
			t.Fatalf("text changed:\n%q\n%q", in, out)
		}
		for i, l := range strings.Split(out, "\n") {
			if len(l) > MaxLineOctets {
				t.Fatalf("line of %d octets", len(l))
			}
			if utf8.ValidString(in) && !utf8.ValidString(l) {
				t.Fatalf("line %q is not valid UTF-8", l)
			}
			if !utf8.ValidString(in) || i == 0 {
				continue
			}
			// A continuation line never starts with what must not start one,
			// unless the previous line was cut inside a run of such characters.
			body := strings.TrimLeft(l, " ")
			if r, _ := utf8.DecodeRuneInString(body); strings.ContainsRune(noStart, r) && strings.Count(in, string(r)) < 100 && len(in) < MaxLineOctets {
				t.Fatalf("line %d begins with %q:\n%s", i+1, r, out)
			}
			if n := w.width(l); n > w.max && len(w.tokens(body)) > 1 && len(in) < MaxLineOctets {
				// Only a single unbreakable token may overflow (a URL, a run of
				// katakana up to half a line after a hanging indent, …).
				toks := w.tokens(body)
				if w.width(toks[0].text)+w.width(strings.Repeat(" ", len(l)-len(body))) <= w.max {
					t.Fatalf("line %q is %d columns:\n%s", l, n, out)
				}
			}
		}
	})
}

// BenchmarkWrap is the cost of wrapping a long line without the cache.
func BenchmarkWrap(b *testing.B) {
	for _, tt := range []struct{ locale, line string }{
		{"ja", strings.Repeat("このたび、当社が運営する「サンプル通販」において、お客様のクレジットカード情報が流出した可能性があることが判明いたしました。", 3)},
		{"en", strings.Repeat("We are very sorry to tell you that the payment card details you used at Sample Online Shop may have been exposed on 28 May 2019. ", 3)},
	} {
		w, _ := wrapperFor(tt.locale)
		b.Run(tt.locale, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				w.wrap(tt.line)
			}
		})
	}
}
