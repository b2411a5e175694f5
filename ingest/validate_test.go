package ingest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/oshirase/oshirase/notice"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		r     notice.Recipient
		field string // "" = accepted
		msg   string
	}{
		{"normalised", notice.Recipient{Email: " Taro.Y@Example.CO.JP ", Name: " 山田 ", Locale: " EN ", CardLast4: " 0042 "}, "", ""},
		{"required", notice.Recipient{Name: "Taro"}, "email", "required"},
		{"invalid UTF-8", notice.Recipient{Email: "a@example.jp", Name: "Ta\xffro"}, "name", "UTF-8"},
		{"replacement character", notice.Recipient{Email: "a@example.jp", Name: "山\ufffd"}, "name", "U+FFFD"},
		{"DEL", notice.Recipient{Email: "a@example.jp", CustomerID: "C\x7f1"}, "customer_id", "control"},
		{"paragraph separator", notice.Recipient{Email: "a@example.jp", CardBrand: "VISA\u2029"}, "card_brand", "control"},
		{"trailing newline", notice.Recipient{Email: "a@example.jp\n"}, "email", "control"},
		{"ideographic space in address", notice.Recipient{Email: "a\u3000b@example.jp"}, "email", "bare address"},
		{"local part too long", notice.Recipient{Email: strings.Repeat("a", 65) + "@example.jp"}, "email", "longer than 64"},
		{"local part 64", notice.Recipient{Email: strings.Repeat("a", 64) + "@example.jp"}, "", ""},
		{"address 255", notice.Recipient{Email: "a@" + strings.Repeat("b", 250) + ".jp"}, "email", "longer than 254"},
		{"address 254", notice.Recipient{Email: strings.Repeat("a", 62) + "@" + strings.Repeat(strings.Repeat("b", 62)+".", 3) + "jp"}, "", ""},
		{"label 64", notice.Recipient{Email: "a@" + strings.Repeat("b", 64) + ".jp"}, "email", "malformed"},
		{"nothing before @", notice.Recipient{Email: "@example.jp"}, "email", "nothing before"},
		{"empty label", notice.Recipient{Email: "a@example..jp"}, "email", "malformed"},
		{"hyphen label", notice.Recipient{Email: "a@-example.jp"}, "email", "malformed"},
		{"trailing dot", notice.Recipient{Email: "a@example.jp."}, "email", "malformed"},
		{"full-width at", notice.Recipient{Email: "a＠example.jp"}, "", ""}, // NFKC: a@example.jp, with a warning
		{"dot at local start", notice.Recipient{Email: ".a@example.jp"}, "email", "RFC 5322"},
		{"name 200", notice.Recipient{Email: "a@example.jp", Name: strings.Repeat("あ", 200)}, "", ""},
		{"name 201", notice.Recipient{Email: "a@example.jp", Name: strings.Repeat("あ", 201)}, "name", "longer than 200"},
		{"customer_id 501", notice.Recipient{Email: "a@example.jp", CustomerID: strings.Repeat("x", 501)}, "customer_id", "longer than 500"},
		{"extra 501", notice.Recipient{Email: "a@example.jp", Extra: map[string]string{"memo": strings.Repeat("x", 501)}}, "memo", "longer than 500"},
		{"locale", notice.Recipient{Email: "a@example.jp", Locale: "ja-JP"}, "locale", "ja or en"},
		{"card in extra", notice.Recipient{Email: "a@example.jp", Extra: map[string]string{"memo": "4111 1111 1111 1111"}}, "memo", "card number"},
		{"extra name with newline", notice.Recipient{Email: "a@example.jp", Extra: map[string]string{"a\nb": "x"}}, "", "control"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rej := Validate(&tt.r)
			if tt.field == "" && tt.msg == "" {
				if rej != nil {
					t.Fatalf("rejected: %+v", rej)
				}
				return
			}
			if rej == nil || rej.Field != tt.field || !strings.Contains(rej.Error, tt.msg) {
				t.Fatalf("rejection = %+v, want field %q with %q", rej, tt.field, tt.msg)
			}
		})
	}

	r := notice.Recipient{Email: " Taro.Y@Example.CO.JP ", Name: " 山田 ", Locale: " EN ", CardLast4: " 0042 ",
		Extra: map[string]string{"plan": " gold ", "memo": "  "}}
	if rej := Validate(&r); rej != nil {
		t.Fatal(rej)
	}
	got := fmt.Sprintf("%s|%s|%s|%s|%v", r.Email, r.Name, r.Locale, r.CardLast4, r.Extra)
	if want := "Taro.Y@example.co.jp|山田|en|0042|map[plan:gold]"; got != want {
		t.Errorf("normalised = %s, want %s", got, want)
	}
}

// TestValidateExtraOrder: with several bad extra fields, the one whose name
// sorts first is reported, every time (map order is random).
func TestValidateExtraOrder(t *testing.T) {
	t.Parallel()
	for i := 0; i < 50; i++ {
		r := notice.Recipient{Email: "a@example.jp", Extra: map[string]string{}}
		for _, k := range []string{"k", "d", "x", "b", "q", "m"} {
			r.Extra[k] = "bad\n"
		}
		r.Extra["a"] = "fine"
		if rej := Validate(&r); rej == nil || rej.Field != "b" {
			t.Fatalf("rejection = %+v, want field b", rej)
		}
	}
	r := notice.Recipient{Email: "a@example.jp", Extra: map[string]string{}}
	for i := 0; i <= MaxExtraFields; i++ {
		r.Extra[fmt.Sprint("x", i)] = "v"
	}
	if rej := Validate(&r); rej == nil || !strings.Contains(rej.Error, "at most 50") {
		t.Fatalf("rejection = %+v, want too many extra fields", rej)
	}
}

// TestAddressesThatCannotBeSent: what could go on the wire after a safe
// normalisation is stored in that form, with a warning; what never could is
// refused with the field and why (issue 13).
func TestAddressesThatCannotBeSent(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in, want string // want "" = refused
		warn     string // a warning that must be given
		why      string // what the refusal must say
	}{
		{in: "idn@bücher.example", want: "idn@xn--bcher-kva.example", warn: NoteIDN},
		{in: "IDN@BÜCHER.Example", want: "IDN@xn--bcher-kva.example", warn: NoteIDN},
		{in: "keep@ｅｘａｍｐｌｅ.com", want: "keep@example.com", warn: NoteNFKC},
		{in: "ｋｅｅｐ＠ｅｘａｍｐｌｅ．ｃｏｍ", want: "keep@example.com", warn: NoteNFKC},
		{in: "user@例え.テスト", want: "user@xn--r8jz45g.xn--zckzah", warn: NoteIDN},
		{in: "山田@example.jp", why: "SMTPUTF8"},
		{in: "josé@example.com", why: "SMTPUTF8"},
		{in: "zw\u200bsp@example.jp", why: "invisible"},
		{in: "x@exa\u200dmple.jp", why: "invisible"},
		{in: "x@-bücher.example", why: "internationalised domain"},
		{in: "x@bü_cher.example", why: "internationalised domain"},
		{in: "x@xn--zz.example", why: "internationalised domain"},
		{in: "x@bücher..example", why: "malformed"},
		{in: "x@192.0.2.1", why: "IP address"},
		{in: "x@[192.0.2.1]", why: "bare address"},
		{in: "x@[IPv6:2001:db8::1]", why: "bare address"},
		{in: "plain@example.jp", want: "plain@example.jp"},
	} {
		r := notice.Recipient{Email: tt.in}
		rej, warns := Check(&r)
		if tt.want == "" {
			if rej == nil || rej.Field != "email" || !strings.Contains(rej.Error, tt.why) {
				t.Errorf("%+q: rejection %+v, want email refused with %q", tt.in, rej, tt.why)
			}
			continue
		}
		if rej != nil {
			t.Errorf("%+q: refused: %+v", tt.in, rej)
			continue
		}
		if r.Email != tt.want {
			t.Errorf("%+q: stored as %q, want %q", tt.in, r.Email, tt.want)
		}
		if tt.warn != "" && (len(warns) == 0 || warns[len(warns)-1].Warning != tt.warn || warns[0].Field != "email") {
			t.Errorf("%+q: warnings %+v, want %q", tt.in, warns, tt.warn)
		}
		if tt.warn == "" && len(warns) > 0 {
			t.Errorf("%+q: unexpected warnings %+v", tt.in, warns)
		}
		if NormalizeEmail(tt.in) != tt.want {
			t.Errorf("NormalizeEmail(%+q) = %q, want %q", tt.in, NormalizeEmail(tt.in), tt.want)
		}
	}
}

// TestEncodedWordNameRefused: a display name that is itself an RFC 2047
// encoded-word would be decoded by mail programs into an address-looking
// name; it is refused with the field.
func TestEncodedWordNameRefused(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"=?utf-8?q?evil=40attacker.com?=", "Taro =?UTF-8?B?ZXZpbEBhdHRhY2tlci5jb20=?=", "=?iso-2022-jp?Q?x?="} {
		r := notice.Recipient{Email: "a@example.jp", Name: name}
		if rej := Validate(&r); rej == nil || rej.Field != "name" || !strings.Contains(rej.Error, "encoded-word") {
			t.Errorf("name %q: %+v, want refused", name, rej)
		}
	}
	for _, name := range []string{"山田 太郎", "A=B?", "=?", "Mr. =? Q"} {
		r := notice.Recipient{Email: "a@example.jp", Name: name}
		if rej := Validate(&r); rej != nil {
			t.Errorf("name %q refused: %+v", name, rej)
		}
	}
}
