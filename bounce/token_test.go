package bounce

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestTokenRoundTrip(t *testing.T) {
	t.Parallel()
	c, err := New("Bounces.Example.JP.", "0123456789abcdef-secret")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Ref{
		{Campaign: "abcdefghijklm", Recipient: 0, Delivery: 0},
		{Campaign: "x7", Recipient: 1234567, Delivery: 3},
		{Campaign: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", Recipient: 1 << 40, Delivery: 99},
	} {
		addr, tok, err := c.ReturnPath(r)
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^b-[a-z0-9-]+@bounces\.example\.jp$`).MatchString(addr) || len(addr[:strings.IndexByte(addr, '@')]) > 64 {
			t.Fatalf("return path %q", addr)
		}
		got, err := c.Decode(tok)
		if err != nil || got != r {
			t.Fatalf("Decode(%q) = %+v, %v; want %+v", tok, got, err, r)
		}
		got, _, err = c.FromAddress(strings.ToUpper(addr))
		if err != nil || got != r {
			t.Fatalf("FromAddress(upper) = %+v, %v", got, err)
		}
	}
}

func TestTokenRefused(t *testing.T) {
	t.Parallel()
	c, _ := New("bounces.example.jp", "0123456789abcdef-secret")
	other, _ := New("bounces.example.jp", "another-secret-0123456789")
	tok, _ := c.Encode(Ref{Campaign: "abcdefghijklm", Recipient: 42, Delivery: 1})
	forged, _ := other.Encode(Ref{Campaign: "abcdefghijklm", Recipient: 42, Delivery: 1})
	p := strings.Split(tok, "-")
	for _, tc := range []struct{ name, tok string }{
		{"other secret", forged},
		{"recipient changed", p[0] + "-17-" + p[2] + "-" + p[3]},
		{"delivery changed", p[0] + "-" + p[1] + "-0-" + p[3]},
		{"campaign changed", "bbcdefghijklm-" + p[1] + "-" + p[2] + "-" + p[3]},
		{"mac cut", tok[:len(tok)-1]},
		{"mac flipped", tok[:len(tok)-1] + map[bool]string{true: "b", false: "a"}[tok[len(tok)-1] == 'a']},
		{"no mac", strings.Join(p[:3], "-")},
		{"extra part", tok + "-x"},
		{"empty", ""},
	} {
		if _, err := c.Decode(tc.tok); !errors.Is(err, ErrToken) {
			t.Errorf("%s: Decode(%q) err = %v, want ErrToken", tc.name, tc.tok, err)
		}
	}
	for _, a := range []string{"b-" + tok + "@example.jp", tok + "@bounces.example.jp", "b-" + tok + "@bounces.example.jp.evil"} {
		if _, _, err := c.FromAddress(a); err == nil {
			t.Errorf("FromAddress(%q) accepted", a)
		}
	}
	if _, err := c.Encode(Ref{Campaign: "Has-Dash"}); err == nil {
		t.Error("Encode accepted a campaign id outside [a-z0-9]")
	}
}

func TestNewChecks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ domain, secret string }{{"", "0123456789abcdef"}, {"x@y.jp", "0123456789abcdef"}, {"bounces.example.jp", "short"}, {"localhost", "0123456789abcdef"}} {
		if _, err := New(tc.domain, tc.secret); err == nil {
			t.Errorf("New(%q, %q) accepted", tc.domain, tc.secret)
		}
	}
}

func TestXText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, out string }{
		{"taro@example.jp", "taro@example.jp"},
		{"a+b=c@example.jp", "a+2Bb+3Dc@example.jp"},
		{"sp ace@x.jp", "sp+20ace@x.jp"},
	} {
		if got := XText(tc.in); got != tc.out {
			t.Errorf("XText(%q) = %q, want %q", tc.in, got, tc.out)
		}
		if got := UnXText(tc.out); got != tc.in {
			t.Errorf("UnXText(%q) = %q, want %q", tc.out, got, tc.in)
		}
	}
}
