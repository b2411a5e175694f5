package notice

import "testing"

func TestMasking(t *testing.T) {
	t.Parallel()
	cases := []struct{ in, want string }{
		{"taro@example.jp", "t***@example.jp"},
		{"550 5.1.1 <taro.yamada@example.jp>: Recipient address rejected", "550 5.1.1 <t***@example.jp>: Recipient address rejected"},
		{"451 4.7.1 try again later", "451 4.7.1 try again later"},
		{"a@b.c and x@y.z", "a***@b.c and x***@y.z"},
	}
	for _, c := range cases {
		if got := MaskAddresses(c.in); got != c.want {
			t.Errorf("MaskAddresses(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if got := MaskEmail("nobody"); got != "***" {
		t.Errorf("MaskEmail(no @) = %q", got)
	}
}

func TestParseStatus(t *testing.T) {
	t.Parallel()
	for _, s := range Statuses {
		if got, err := ParseStatus(string(s)); err != nil || got != s {
			t.Errorf("ParseStatus(%q) = %q, %v", s, got, err)
		}
	}
	if _, err := ParseStatus("delivered"); err == nil {
		t.Error("ParseStatus accepted an unknown status")
	}
}
