package templates

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestWrap(t *testing.T) {
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
			lines := strings.Split(out, "\n")
			for _, l := range lines[:len(lines)-1] {
				if w := ja.width(l); w < widthJA-6 {
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
	tests := []struct {
		name, locale, in string
	}{
		{"ascii token", "en", strings.Repeat("x", 3000)},
		{"url", "en", "see https://example.com/?q=" + strings.Repeat("a", 2500)},
		{"closing punctuation run", "ja", "あ" + strings.Repeat("」", 700)},
		{"mixed", "ja", strings.Repeat("é", 1200)},
		{"indented", "en", "- " + strings.Repeat("y", 2000)},
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
	for _, s := range []string{"abc\xffdef\n", "\xff\xfe\n", "お客様\xe3\x81様\n", strings.Repeat("あ\xff", 200) + "\n"} {
		got := Wrap(s, "ja")
		if strings.ReplaceAll(got, "\n", "") != strings.ReplaceAll(s, "\n", "") {
			t.Errorf("Wrap(%q) = %q: bytes changed", s, got)
		}
	}
}
