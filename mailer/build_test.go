package mailer

import (
	"bytes"
	"encoding/base64"
	"mime"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/wneessen/go-mail"

	"github.com/oshirase/oshirase/internal/mimetest"
)

// TestBuildEncoding: a Japanese body goes out base64 (half the size of
// quoted-printable), an English one quoted-printable; both decode to the text.
func TestBuildEncoding(t *testing.T) {
	ja := strings.Repeat("お客様のクレジットカード情報が流出した可能性がございます。\n", 40)
	en := strings.Repeat("Your card details may have been exposed; please have the card reissued.\n", 40)
	for _, tt := range []struct {
		name, text, enc string
	}{{"ja", ja, "base64"}, {"en", en, "quoted-printable"}} {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := Build(&Message{From: "Example <notice@example.jp>", To: "taro@example.jp", ToName: "山田 太郎",
				Subject: "【重要】お知らせ", Text: tt.text, HTML: "<p>" + tt.text + "</p>", MessageID: "1@example.jp"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			var raw bytes.Buffer
			if _, err := msg.WriteTo(&raw); err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(raw.String(), "Content-Transfer-Encoding: "+tt.enc); n != 2 {
				t.Errorf("%d parts with %s:\n%.600s", n, tt.enc, raw.String())
			}
			if tt.name == "ja" && raw.Len() > 2*len(tt.text)+2*len(tt.text)/3+2000 {
				t.Errorf("message is %d bytes for %d bytes of text", raw.Len(), len(tt.text))
			}
			m, err := mimetest.Parse(raw.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(m.Text, strings.TrimSpace(strings.SplitN(tt.text, "\n", 2)[0])) {
				t.Errorf("text part does not decode to the text: %.200q", m.Text)
			}
		})
	}
}

// TestSetHTMLCharset: the HTML part declares exactly the charset its MIME
// part has, whether the document declared another, none, or has no head.
func TestSetHTMLCharset(t *testing.T) {
	const eq = `<meta http-equiv="Content-Type" content="text/html; charset=iso-2022-jp">`
	for _, tt := range []struct{ name, in, want string }{
		{"meta charset", `<html><head><meta charset="utf-8"><title>t</title></head><body>x</body></html>`,
			`<html><head><meta charset="iso-2022-jp"><title>t</title></head><body>x</body></html>`},
		{"upper-case head", `<HTML><HEAD><META CHARSET=UTF-8></HEAD><BODY>x</BODY></HTML>`,
			`<HTML><HEAD><meta charset="iso-2022-jp"></HEAD><BODY>x</BODY></HTML>`},
		{"http-equiv", `<html><head><meta http-equiv="content-type" content="text/html; charset=utf-8"></head><body></body></html>`,
			`<html><head>` + eq + `</head><body></body></html>`},
		{"none declared", `<html><head><title>t</title></head><body>x</body></html>`,
			`<html><head>` + "\n" + eq + `<title>t</title></head><body>x</body></html>`},
		{"body text left alone", `<html><head></head><body>&lt;meta charset="utf-8"&gt; </body></html>`,
			`<html><head>` + "\n" + eq + `</head><body>&lt;meta charset="utf-8"&gt; </body></html>`},
		{"no head", `<p>x</p>`, `<p>x</p>`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := setHTMLCharset(tt.in, "iso-2022-jp"); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestDotStuff: lines starting with "." get one more (RFC 5321 4.5.2), the
// body ends with CRLF "." CRLF, and the caller's bytes are left alone.
func TestDotStuff(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"a\r\nb\r\n", "a\r\nb\r\n.\r\n"},
		{"a\r\nb", "a\r\nb\r\n.\r\n"},
		{"", "\r\n.\r\n"},
		{".a\r\n", "..a\r\n.\r\n"},
		{"a\r\n.\r\n.b\r\n..c\r\n", "a\r\n..\r\n..b\r\n...c\r\n.\r\n"},
		{"a\r\n.", "a\r\n..\r\n.\r\n"},
	} {
		b := make([]byte, len(tt.in), len(tt.in)+64) // spare capacity, as from a pooled buffer
		copy(b, tt.in)
		if got := string(dotStuff(b)); got != tt.want {
			t.Errorf("dotStuff(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if string(b) != tt.in {
			t.Errorf("dotStuff changed its input %q to %q", tt.in, b)
		}
	}
}

// TestEncodeWordsUTF8: each encoded-word holds as many whole characters as
// fit in maxRaw bytes (at least one), and the words decode back exactly.
func TestEncodeWordsUTF8(t *testing.T) {
	dec := new(mime.WordDecoder)
	for _, s := range []string{
		"a", "山田 太郎", "【重要】「サンプル商事オンラインストア」におけるクレジットカード情報流出のお詫びとカード再発行のお願い",
		"Zoë 🙇‍♀️ Ünal 株式会社サンプル", strings.Repeat("𠮷", 40), "x" + strings.Repeat("é", 100),
	} {
		for _, maxRaw := range []int{1, 3, 36, 45} {
			enc, err := encodeWords(s, false, maxRaw)
			if err != nil {
				t.Fatal(err)
			}
			var got strings.Builder
			for _, w := range strings.Split(enc, "\r\n ") {
				raw, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(strings.TrimPrefix(w, "=?UTF-8?B?"), "?="))
				if err != nil {
					t.Fatalf("%q: word %q: %v", s, w, err)
				}
				if !utf8.Valid(raw) {
					t.Errorf("%q max %d: word %q splits a character", s, maxRaw, raw)
				}
				if _, size := utf8.DecodeRune(raw); len(raw) > maxRaw && len(raw) != size {
					t.Errorf("%q max %d: word of %d bytes", s, maxRaw, len(raw))
				}
				got.Write(raw)
			}
			if got.String() != s {
				t.Errorf("%q max %d: words hold %q", s, maxRaw, got.String())
			}
			if d, err := dec.DecodeHeader(strings.ReplaceAll(enc, "\r\n ", " ")); err != nil || d != s {
				t.Errorf("%q max %d: mime decodes to %q, %v", s, maxRaw, d, err)
			}
		}
	}
}

// TestBodyEncoding: base64 for mostly non-ASCII text, quoted-printable
// otherwise, at every length (the count runs eight bytes at a time).
func TestBodyEncoding(t *testing.T) {
	slow := func(s string) mail.Encoding {
		high := 0
		for i := 0; i < len(s); i++ {
			if s[i] >= 0x80 {
				high++
			}
		}
		if 2*high > len(s)*35/100 {
			return mail.EncodingB64
		}
		return mail.EncodingQP
	}
	for n := 0; n < 40; n++ {
		for _, unit := range []string{"a", "あ", "ab あ", "é"} {
			s := strings.Repeat(unit, n)
			if got, want := bodyEncoding(s), slow(s); got != want {
				t.Errorf("bodyEncoding(%q) = %s, want %s", s, got, want)
			}
		}
	}
}
