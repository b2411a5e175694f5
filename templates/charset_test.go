package templates

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckCharset(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		r       Rendered
		charset string
		want    []CharProblem // nil: no error
	}{
		{"plain japanese", Rendered{
			Subject: "【重要】クレジットカード情報流出のお詫び",
			Text:    "山田 太郎 様\n末尾 1234　再発行をお願いいたします。※「」・ー〒①以外\n",
			HTML:    `<p lang="ja">髙橋ではなく高橋、9:00から18:00まで</p>`,
		}, "iso-2022-jp", []CharProblem{{"text", 2, 28, '①'}, {"html", 1, 14, '髙'}}},
		{"nec and ibm extensions", Rendered{Subject: "①お知らせ", Text: "a\n株式会社\n㈱サンプル Ⅲ ⅲ\n", HTML: "ok"}, "ISO-2022-JP",
			[]CharProblem{{"subject", 1, 1, '①'}, {"text", 3, 1, '㈱'}, {"text", 3, 7, 'Ⅲ'}, {"text", 3, 9, 'ⅲ'}}},
		{"emoji and half-width kana", Rendered{Subject: "ok", Text: "ok", HTML: "<p>🙇 ｶｰﾄﾞ</p>"}, "iso-2022-jp",
			[]CharProblem{{"html", 1, 4, '🙇'}, {"html", 1, 6, 'ｶ'}, {"html", 1, 7, 'ｰ'}, {"html", 1, 8, 'ﾄ'}, {"html", 1, 9, 'ﾞ'}}},
		{"wave dashes", Rendered{Subject: "9:00～18:00", Text: "9:00〜18:00", HTML: "0120－000"}, "iso-2022-jp",
			[]CharProblem{{"subject", 1, 5, '～'}, {"text", 1, 5, '〜'}, {"html", 1, 5, '－'}}},
		{"escape sequence", Rendered{Subject: "a\x1b$Bb", Text: "x", HTML: "y"}, "iso-2022-jp",
			[]CharProblem{{"subject", 1, 2, 0x1b}}},
		{"latin-1", Rendered{Subject: "café ¥100", Text: "", HTML: ""}, "iso-2022-jp",
			[]CharProblem{{"subject", 1, 4, 'é'}, {"subject", 1, 6, '¥'}}},
		{"utf-8 carries all", Rendered{Subject: "①㈱🙇", Text: "ｶ", HTML: "～"}, "utf-8", nil},
		{"default is utf-8", Rendered{Subject: "①"}, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckCharset(&tt.r, tt.charset)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("CheckCharset: %v", err)
				}
				return
			}
			var ce *CharsetError
			if !errors.As(err, &ce) {
				t.Fatalf("CheckCharset: %v, want a *CharsetError", err)
			}
			if len(ce.Problems) != len(tt.want) {
				t.Fatalf("problems %v, want %v", ce.Problems, tt.want)
			}
			for i, p := range ce.Problems {
				if p != tt.want[i] {
					t.Errorf("problem %d = %v, want %v", i, p, tt.want[i])
				}
				if i < maxListed && !strings.Contains(err.Error(), p.String()) {
					t.Errorf("error %q lacks %q", err, p)
				}
			}
		})
	}
	if err := CheckCharset(&Rendered{}, "shift_jis"); err == nil {
		t.Error("unknown charset: no error")
	}
}

func TestCharsetErrorIsBounded(t *testing.T) {
	t.Parallel()
	err := CheckCharset(&Rendered{Text: strings.Repeat("①", 100)}, "iso-2022-jp")
	var ce *CharsetError
	if !errors.As(err, &ce) || len(ce.Problems) != 100 {
		t.Fatalf("CheckCharset: %v", err)
	}
	if !strings.Contains(err.Error(), "and 90 more") || strings.Count(err.Error(), "①") != maxListed {
		t.Errorf("error %q", err)
	}
}
