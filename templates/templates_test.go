package templates

import (
	"encoding/json"
	"errors"
	"flag"
	"html"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/oshirase/oshirase/notice"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

var fixedDate = time.Date(2019, 6, 1, 10, 0, 0, 0, time.UTC)

var names = []string{"card-reissue", "password-reset", "incident-update"}

func mustLoad(t *testing.T, dir string) *Set {
	t.Helper()
	s, err := Load(dir)
	if err != nil {
		t.Fatalf("Load(%q): %v", dir, err)
	}
	return s
}

func sampleInput(t *testing.T, s *Set, name, locale string) Input {
	t.Helper()
	in, err := s.Sample(name, locale)
	if err != nil {
		t.Fatal(err)
	}
	in.Date = fixedDate
	return in
}

func render(t *testing.T, s *Set, name string, in Input) *Rendered {
	t.Helper()
	r, err := s.Render(name, in)
	if err != nil {
		t.Fatalf("Render(%s, %s): %v", name, in.Locale, err)
	}
	return r
}

// unwrap undoes Wrap (and every other line break) so that a phrase can be
// searched for wherever a line was broken.
func unwrap(text, locale string) string {
	sep := " "
	if locale == "ja" {
		sep = ""
	}
	return lineBreak.ReplaceAllString(text, sep)
}

var lineBreak = regexp.MustCompile(`\n *`)

// cardNumber matches 13 to 19 digits, optionally separated by spaces or dashes.
var cardNumber = regexp.MustCompile(`\d(?:[ -]?\d){12,18}`)

func TestRenderEveryTemplateAndLocale(t *testing.T) {
	t.Parallel()
	s := mustLoad(t, "")
	want := map[string]map[string][]string{
		"card-reissue": {
			"ja": {"山田 太郎 様", "お詫び", "再発行", "末尾 1234", "2019年5月28日", "2009年7月10日", "一切ございません", "0120-000-000", "support@example.co.jp", "2019年6月1日", "原因", "二次被害の有無", "再発行手数料はお客様のご負担となりません", "最大460,795件", "クレジットカード会社からの連絡を受けて", "不正利用の監視"},
			"en": {"Dear Taro Yamada,", "apologize", "reissue", "ending in 1234", "28 May 2019", "10 July 2009", "ask for your", "+81-3-0000-0000", "support@example.co.jp", "1 June 2019", "altered the payment page", "no reports", "at no cost to you", "up to 460,795 cards", "after a card company alerted us", "monitor the affected cards"},
		},
		"password-reset": {
			"ja": {"山田 太郎 様", "お詫び", "パスワード", "公式アプリ", "ブックマーク", "https://www.example.co.jp/members/password/reset", "2019年6月30日", "一切ございません", "原因", "二次被害の有無"},
			"en": {"Dear Taro Yamada,", "apologize", "new password", "official app", "bookmark", "https://www.example.co.jp/members/password/reset", "30 June 2019", "ask for your", "WHY IT HAPPENED", "HAS MY ACCOUNT BEEN MISUSED?"},
		},
		"incident-update": {
			"ja": {"山田 太郎 様", "その後の調査", "お詫び", "2019年7月15日", "セキュリティコード", "一切ございません", "原因", "二次被害の有無", "お願い申し上げます"},
			"en": {"Dear Taro Yamada,", "Update", "sorry", "15 July 2019", "Security codes", "ask for your", "WHY IT HAPPENED", "HAS THE INFORMATION BEEN MISUSED?"},
		},
	}
	subjectPrefix := map[string]string{"ja": "【重要", "en": "[Important] "}
	for _, name := range names {
		for _, loc := range Locales {
			t.Run(name+"/"+loc, func(t *testing.T) {
				r := render(t, s, name, sampleInput(t, s, name, loc))
				if !strings.HasPrefix(r.Subject, subjectPrefix[loc]) {
					t.Errorf("subject %q does not begin with %q", r.Subject, subjectPrefix[loc])
				}
				if strings.ContainsAny(r.Subject, "\r\n") {
					t.Errorf("subject has a line break: %q", r.Subject)
				}
				// A phone shows about 30 full-width characters of a
				// subject: the gist comes first, the service name last.
				svc := s.byName[name].info.Sample["service"].(map[string]any)[loc].(string)
				open, closing := map[string]string{"ja": "（", "en": " ("}[loc], map[string]string{"ja": "）", "en": ")"}[loc]
				gist, ok := strings.CutSuffix(r.Subject, open+svc+closing)
				if !ok {
					t.Errorf("subject %q does not end with the service name %q", r.Subject, open+svc+closing)
				}
				if n := utf8.RuneCountInString(gist); loc == "ja" && n > 32 || loc == "en" && n > 64 {
					t.Errorf("subject's gist %q is %d characters: a phone cuts it off", gist, n)
				}
				text := unwrap(r.Text, loc)
				page := html.UnescapeString(r.HTML)
				for _, w := range want[name][loc] {
					if !strings.Contains(text, w) {
						t.Errorf("text lacks %q", w)
					}
					if !strings.Contains(page, w) && !(loc == "en" && strings.Contains(strings.ToUpper(page), w)) {
						t.Errorf("html lacks %q", w)
					}
				}
				for i, line := range strings.Split(r.Text, "\n") {
					if len(line) > MaxLineOctets {
						t.Errorf("text line %d is %d octets", i+1, len(line))
					}
				}
				if !strings.Contains(r.HTML, `<html lang="`+loc+`">`) {
					t.Error("html has no lang attribute")
				}
				for _, bad := range []string{"<script", "<link", "<img", "src=", "@import", "url("} {
					if strings.Contains(r.HTML, bad) {
						t.Errorf("html contains %q: no external resources or scripts", bad)
					}
				}
				// The default templates and sample data are written for ISO-2022-JP too.
				if err := CheckCharset(r, notice.CharsetISO2022JP); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

// TestCardReissueOrder checks that the sections of the card notice come in
// the order a breach notice must follow.
func TestCardReissueOrder(t *testing.T) {
	t.Parallel()
	s := mustLoad(t, "")
	order := map[string][]string{
		"ja": {"山田 太郎 様", "お詫び", "■ 経緯", "2019年5月28日", "■ 原因", "改ざん", "■ 対象となるお客様", "対象件数：最大460,795件", "■ 流出したおそれのある情報", "クレジットカード番号", "有効期限", "カード名義人名", "末尾 1234", "■ 二次被害の有無", "不正利用の報告", "監視", "■ お客様へのお願い", "ご利用明細", "再発行", "再発行手数料はお客様のご負担となりません。", "■ 当社の対応", "クレジットカード決済を停止", "■ 不審なメール・電話", "追加のお知らせ", "■ お問い合わせ窓口", "0120-000-000", "受付時間", "support@example.co.jp", "2019年6月1日", "株式会社サンプル"},
		"en": {"Dear Taro Yamada,", "apologize", "WHAT HAPPENED", "28 May 2019", "WHY IT HAPPENED", "altered", "WHO IS AFFECTED", "Number affected: up to 460,795 cards", "WHAT INFORMATION", "Card number", "Expiry date", "Cardholder name", "ending in 1234", "HAS MY CARD BEEN MISUSED?", "no reports", "monitor", "WHAT YOU SHOULD DO", "statements", "reissue", "at no cost to you", "WHAT WE HAVE DONE", "Suspended", "BEWARE", "Extra notice", "CONTACT US", "+81-3-0000-0000", "Hours:", "support@example.co.jp", "Sample Co., Ltd.", "1 June 2019"},
	}
	for _, loc := range Locales {
		t.Run(loc, func(t *testing.T) {
			in := sampleInput(t, s, "card-reissue", loc)
			in.Paragraphs = []string{map[string]string{"ja": "追加のお知らせです。", "en": "Extra notice."}[loc]}
			r := render(t, s, "card-reissue", in)
			for _, body := range []struct{ name, s string }{{"text", unwrap(r.Text, loc)}, {"html", unwrap(strings.ReplaceAll(r.HTML, "<br>", "\n"), loc)}} {
				at := 0
				for _, w := range order[loc] {
					if body.name == "html" && strings.HasPrefix(w, "■ ") {
						w = w[len("■ "):]
					}
					if body.name == "html" && loc == "en" && w == strings.ToUpper(w) {
						continue // HTML headings are in sentence case
					}
					i := strings.Index(body.s[at:], w)
					if i < 0 {
						t.Fatalf("%s: %q missing or out of order (searching after offset %d)", body.name, w, at)
					}
					at += i + len(w)
				}
			}
		})
	}
}

func TestGreetingAndCard(t *testing.T) {
	t.Parallel()
	s := mustLoad(t, "")
	tests := []struct {
		locale string
		rcpt   notice.Recipient
		want   []string
		absent []string
	}{
		{"ja", notice.Recipient{Name: "山田 太郎", CardBrand: "Mastercard", CardLast4: "9876"}, []string{"山田 太郎 様", "対象カード：Mastercard（カード番号末尾 9876）"}, []string{"お客様各位"}},
		{"ja", notice.Recipient{}, []string{"お客様各位"}, []string{" 様\n", "末尾", "対象カード"}},
		{"ja", notice.Recipient{CardLast4: "5555"}, []string{"お客様各位", "対象カード：カード番号末尾 5555\n"}, []string{"（カード番号"}},
		{"en", notice.Recipient{Name: "Taro Yamada", CardBrand: "JCB", CardLast4: "4321"}, []string{"Dear Taro Yamada,", "Affected card: JCB ending in 4321"}, []string{"Dear Customer"}},
		{"en", notice.Recipient{}, []string{"Dear Customer,"}, []string{"ending in", "Affected card"}},
		// A name with a line break stays on the greeting line.
		{"en", notice.Recipient{Name: "Taro\r\nYamada"}, []string{"Dear Taro Yamada,"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.locale+"/"+tt.rcpt.Name, func(t *testing.T) {
			in := sampleInput(t, s, "card-reissue", tt.locale)
			in.Recipient = tt.rcpt
			r := render(t, s, "card-reissue", in)
			for _, w := range tt.want {
				if !strings.Contains(r.Text, w) {
					t.Errorf("text lacks %q", w)
				}
			}
			for _, a := range tt.absent {
				if strings.Contains(r.Text, a) {
					t.Errorf("text has %q", a)
				}
			}
		})
	}
}

// TestPasswordResetPeriod: the affected period is optional; either end may
// be given alone, and without both the section is left out.
func TestPasswordResetPeriod(t *testing.T) {
	t.Parallel()
	s := mustLoad(t, "")
	tests := []struct {
		name       string
		start, end string
		want       map[string][]string // per locale, the heading then a phrase, in the text (unwrapped) and the HTML
	}{
		{"both", "2015-04-01", "2019-05-28", map[string][]string{
			"ja": {"対象となるお客様", "2015年4月1日から2019年5月28日までの間に「サンプル会員サービス」にご登録いただいていたお客様が対象です。"},
			"en": {"Who is affected", "at any time between 1 April 2015 and 28 May 2019."},
		}},
		{"start only", "2015-04-01", "", map[string][]string{
			"ja": {"対象となるお客様", "2015年4月1日以降、「サンプル会員サービス」に"},
			"en": {"Who is affected", "at any time since 1 April 2015."},
		}},
		{"end only", "", "2019-05-28", map[string][]string{
			"ja": {"対象となるお客様", "2019年5月28日までに「サンプル会員サービス」に"},
			"en": {"Who is affected", "at any time up to 28 May 2019."},
		}},
		{"neither", "", "", map[string][]string{"ja": nil, "en": nil}},
	}
	for _, tt := range tests {
		for _, loc := range Locales {
			t.Run(tt.name+"/"+loc, func(t *testing.T) {
				in := sampleInput(t, s, "password-reset", loc)
				data := make(map[string]any)
				for k, v := range in.Data {
					data[k] = v
				}
				delete(data, "period_start")
				delete(data, "period_end")
				delete(data, "affected_count")
				if tt.start != "" {
					data["period_start"] = tt.start
				}
				if tt.end != "" {
					data["period_end"] = tt.end
				}
				if err := s.Validate("password-reset", data); err != nil {
					t.Fatalf("Validate: %v", err)
				}
				in.Data = data
				r := render(t, s, "password-reset", in)
				text := unwrap(r.Text, loc)
				for i, w := range tt.want[loc] {
					tw := w
					if i == 0 && loc == "en" {
						tw = strings.ToUpper(w) // the heading
					}
					if !strings.Contains(text, tw) {
						t.Errorf("text lacks %q", tw)
					}
					if !strings.Contains(r.HTML, w) {
						t.Errorf("html lacks %q", w)
					}
				}
				if tt.want[loc] == nil {
					for _, a := range []string{"対象となるお客様", "WHO IS AFFECTED", "Who is affected", "までの間", "at any time"} {
						if strings.Contains(r.Text, a) || strings.Contains(r.HTML, a) {
							t.Errorf("no period given, but the notice has %q", a)
						}
					}
				}
				// The period comes after what happened and before what leaked.
				if tt.want[loc] != nil {
					heads := map[string][]string{"ja": {"経緯", "原因", "対象となるお客様", "流出したおそれのある情報"}, "en": {"What happened", "Why it happened", "Who is affected", "What information was involved"}}[loc]
					for _, body := range []string{strings.ToUpper(text), strings.ToUpper(r.HTML)} {
						at := 0
						for _, h := range heads {
							i := strings.Index(body[at:], strings.ToUpper(h))
							if i < 0 {
								t.Fatalf("%q missing or out of order", h)
							}
							at += i
						}
					}
				}
			})
		}
	}
}

func TestNeverFullCardNumber(t *testing.T) {
	t.Parallel()
	s := mustLoad(t, "")
	for _, card := range []string{"4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "378282246310005"} {
		for _, name := range names {
			for _, loc := range Locales {
				in := sampleInput(t, s, name, loc)
				in.Recipient.CardLast4 = card // an upload that put the whole number in the wrong column
				r := render(t, s, name, in)
				for part, body := range map[string]string{"subject": r.Subject, "text": r.Text, "html": r.HTML} {
					if m := cardNumber.FindString(body); m != "" {
						t.Errorf("%s/%s %s shows a card number: %q", name, loc, part, m)
					}
				}
				if name == "card-reissue" {
					last := card[len(card)-4:]
					if !strings.Contains(r.Text, last) {
						t.Errorf("%s/%s: last four digits %s missing", name, loc, last)
					}
				}
			}
		}
	}
}

func TestHTMLEscapes(t *testing.T) {
	t.Parallel()
	s := mustLoad(t, "")
	const evil = `<script>alert(1)</script>`
	for _, name := range names {
		for _, loc := range Locales {
			t.Run(name+"/"+loc, func(t *testing.T) {
				in := sampleInput(t, s, name, loc)
				in.Recipient.Name = evil
				in.Paragraphs = []string{evil + "\nsecond line & more"}
				data := make(map[string]any)
				for k, v := range in.Data {
					data[k] = v
				}
				data["company"] = `Evil "Co" <b>`
				in.Data = data
				r := render(t, s, name, in)
				if strings.Contains(r.HTML, "<script") || strings.Contains(r.HTML, "<b>") {
					t.Error("html has unescaped markup from data")
				}
				for _, w := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "<br>\nsecond line &amp; more", "Evil &#34;Co&#34; &lt;b&gt;"} {
					if !strings.Contains(r.HTML, w) {
						t.Errorf("html lacks %q", w)
					}
				}
				// Plain text is not HTML: it shows the name as given.
				if !strings.Contains(r.Text, evil) {
					t.Error("text lacks the name as given")
				}
			})
		}
	}
}

func TestSubjectIsOneLine(t *testing.T) {
	t.Parallel()
	s := mustLoad(t, "")
	for _, loc := range Locales {
		in := sampleInput(t, s, "card-reissue", loc)
		in.Data = map[string]any{}
		for k, v := range sampleInput(t, s, "card-reissue", loc).Data {
			in.Data[k] = v
		}
		in.Data["service"] = "Shop\r\nBcc: victim@example.com\n"
		r := render(t, s, "card-reissue", in)
		if strings.ContainsAny(r.Subject, "\r\n") {
			t.Errorf("%s: subject %q has a line break", loc, r.Subject)
		}
		if !strings.Contains(r.Subject, "Shop Bcc: victim@example.com") {
			t.Errorf("%s: subject %q", loc, r.Subject)
		}
	}
}

func TestListAndHas(t *testing.T) {
	t.Parallel()
	s := mustLoad(t, "")
	list := s.List()
	if len(list) != 3 {
		t.Fatalf("List: %d templates, want 3", len(list))
	}
	for i, name := range []string{"card-reissue", "incident-update", "password-reset"} {
		if list[i].Name != name {
			t.Errorf("List[%d] = %s, want %s", i, list[i].Name, name)
		}
		if !s.Has(name) {
			t.Errorf("Has(%s) = false", name)
		}
		if len(list[i].Locales) != 2 || list[i].Description == "" || len(list[i].Fields) == 0 {
			t.Errorf("%s: incomplete info %+v", name, list[i])
		}
	}
	if s.Has("nope") {
		t.Error(`Has("nope") = true`)
	}
	b, err := json.Marshal(list[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"name":`, `"description":`, `"locales":`, `"fields":`, `"required":`, `"kind":"date"`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("JSON %s lacks %s", b, key)
		}
	}
	if _, err := s.Render("nope", Input{Locale: "ja"}); !errors.Is(err, ErrUnknownTemplate) {
		t.Errorf("Render(nope): %v, want ErrUnknownTemplate", err)
	}
	in := sampleInput(t, s, "card-reissue", "ja")
	in.Locale = "fr"
	if _, err := s.Render("card-reissue", in); err == nil {
		t.Error("Render with locale fr: no error")
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	s := mustLoad(t, "")
	sample := func() map[string]any {
		in, _ := s.Sample("card-reissue", "ja")
		m := make(map[string]any)
		for k, v := range in.Data {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name   string
		edit   func(m map[string]any)
		fields []string // fields the error must name; nil: valid
	}{
		{"sample", func(map[string]any) {}, nil},
		{"plain strings and lists", func(m map[string]any) {
			m["company"] = "株式会社サンプル"
			m["leaked_items"] = []any{"カード番号"}
			delete(m, "url")
			delete(m, "reissue_fee")
			delete(m, "card_monitoring")
		}, nil},
		// APPI: the cause and the secondary harm are what a notice must state.
		{"missing cause and secondary harm", func(m map[string]any) { delete(m, "cause"); delete(m, "secondary_harm") }, []string{"cause", "secondary_harm"}},
		{"empty cause", func(m map[string]any) { m["cause"] = map[string]any{"ja": "調査中です。", "en": " "} }, []string{"cause"}},
		{"javascript url", func(m map[string]any) { m["url"] = "javascript:alert(document.cookie)" }, []string{"url"}},
		{"http url", func(m map[string]any) { m["url"] = "http://www.example.co.jp/info" }, []string{"url"}},
		{"url with credentials", func(m map[string]any) { m["url"] = "https://www.example.co.jp@evil.example/info" }, []string{"url"}},
		{"url with a space", func(m map[string]any) { m["url"] = "https://www.example.co.jp/a b" }, []string{"url"}},
		{"email with a query", func(m map[string]any) { m["contact_email"] = "support@example.co.jp?bcc=all@example.com" }, []string{"contact_email"}},
		{"email with a name", func(m map[string]any) { m["contact_email"] = "Support <support@example.co.jp>" }, []string{"contact_email"}},
		{"email not an address", func(m map[string]any) { m["contact_email"] = "support" }, []string{"contact_email"}},
		{"period ends before it starts", func(m map[string]any) { m["period_start"] = "2019-05-28"; m["period_end"] = "2019-05-27" }, []string{"period_start"}},
		{"one-day period", func(m map[string]any) { m["period_start"] = "2019-05-28"; m["period_end"] = "2019-05-28" }, nil},
		{"missing required", func(m map[string]any) { delete(m, "hotline") }, []string{"hotline"}},
		{"empty required", func(m map[string]any) { m["contact_email"] = " " }, []string{"contact_email"}},
		{"null required", func(m map[string]any) { m["company"] = nil }, []string{"company"}},
		{"number for string", func(m map[string]any) { m["hotline"] = 120.0 }, []string{"hotline"}},
		{"string for list", func(m map[string]any) { m["leaked_items"] = "card number" }, []string{"leaked_items"}},
		{"list of numbers", func(m map[string]any) { m["actions_taken"] = []any{1.0} }, []string{"actions_taken"}},
		{"empty list", func(m map[string]any) { m["actions_taken"] = []any{} }, []string{"actions_taken"}},
		{"bad date", func(m map[string]any) { m["discovered_on"] = "May 28, 2019" }, []string{"discovered_on"}},
		{"localized date", func(m map[string]any) { m["period_end"] = map[string]any{"ja": "2019-05-28", "en": "2019-05-28"} }, []string{"period_end"}},
		{"missing locale", func(m map[string]any) { m["service"] = map[string]any{"ja": "サンプル通販"} }, []string{"service"}},
		{"unknown locale", func(m map[string]any) { m["service"] = map[string]any{"ja": "a", "en": "b", "fr": "c"} }, []string{"service"}},
		{"unknown field", func(m map[string]any) { m["hotine"] = "typo" }, []string{"hotine"}},
		{"several", func(m map[string]any) { delete(m, "company"); m["period_start"] = 2009.0 }, []string{"company", "period_start"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := sample()
			tt.edit(m)
			err := s.Validate("card-reissue", m)
			if tt.fields == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var de *DataError
			if !errors.As(err, &de) {
				t.Fatalf("Validate: %v, want a *DataError", err)
			}
			var got []string
			for _, f := range de.Fields {
				got = append(got, f.Field)
			}
			if strings.Join(got, ",") != strings.Join(tt.fields, ",") {
				t.Errorf("fields %v, want %v (%v)", got, tt.fields, err)
			}
			for _, f := range tt.fields {
				if !strings.Contains(err.Error(), `"`+f+`"`) {
					t.Errorf("error %q does not name %q", err, f)
				}
			}
		})
	}
	if err := s.Validate("nope", sample()); !errors.Is(err, ErrUnknownTemplate) {
		t.Errorf("Validate(nope): %v, want ErrUnknownTemplate", err)
	}
}

func TestValidateCampaign(t *testing.T) {
	t.Parallel()
	s := mustLoad(t, "")
	in := sampleInput(t, s, "card-reissue", "ja")
	c := &notice.Campaign{Template: "card-reissue", DefaultLocale: "ja", Charset: notice.CharsetISO2022JP, Data: in.Data}
	if err := s.ValidateCampaign(c); err != nil {
		t.Fatalf("ValidateCampaign: %v", err)
	}
	c.Paragraphs = []string{"お問い合わせは㈱サンプルまで。"}
	var ce *CharsetError
	if err := s.ValidateCampaign(c); !errors.As(err, &ce) || ce.Problems[0].Char != '㈱' {
		t.Errorf("ValidateCampaign with ㈱ in ISO-2022-JP: %v", err)
	}
	c.Charset = notice.CharsetUTF8
	if err := s.ValidateCampaign(c); err != nil {
		t.Errorf("ValidateCampaign with ㈱ in UTF-8: %v", err)
	}
	c.DefaultLocale = "fr"
	if err := s.ValidateCampaign(c); err == nil {
		t.Error("ValidateCampaign with locale fr: no error")
	}
}

// copyTemplate copies the embedded template name into dir.
func copyTemplate(t testing.TB, dir, name string) {
	t.Helper()
	sub, err := fs.Sub(embedded, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join(dir, name), sub); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeMinimal writes a small valid template called name into dir.
func writeMinimal(t *testing.T, dir, name string) {
	t.Helper()
	writeFile(t, filepath.Join(dir, name, "meta.json"), `{
  "description": "A short hello.",
  "fields": [
    {"name": "company", "kind": "string", "required": true, "description": "Sender."},
    {"name": "when", "kind": "date", "required": false, "description": "A date."}
  ],
  "sample": {"company": "Sample", "when": "2019-05-28"}
}`)
	for _, loc := range Locales {
		writeFile(t, filepath.Join(dir, name, loc, "subject.tmpl"), "Hello from {{.Data.company}}\n")
		writeFile(t, filepath.Join(dir, name, loc, "text.tmpl"), "Hello {{.Recipient.Name}}\n{{with .Data.when}}{{date .}}{{end}}\n{{.Data.company}}\n")
		writeFile(t, filepath.Join(dir, name, loc, "html.tmpl"), "<!DOCTYPE html>\n<html lang=\""+loc+"\"><body><p>Hello {{.Recipient.Name}}</p><p>{{.Data.company}}</p></body></html>\n")
	}
}

func TestOverrideReplacesAndAdds(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	copyTemplate(t, dir, "card-reissue")
	writeFile(t, filepath.Join(dir, "card-reissue", "ja", "subject.tmpl"), "【重要】差し替え：{{.Data.service}}\n")
	writeMinimal(t, dir, "hello")
	writeFile(t, filepath.Join(dir, "README.md"), "not a template\n") // files at the top are ignored

	s := mustLoad(t, dir)
	if got := len(s.List()); got != 4 {
		t.Fatalf("List: %d templates, want 4", got)
	}
	r := render(t, s, "card-reissue", sampleInput(t, s, "card-reissue", "ja"))
	if r.Subject != "【重要】差し替え：サンプル通販" {
		t.Errorf("replaced subject = %q", r.Subject)
	}
	r = render(t, s, "card-reissue", sampleInput(t, s, "card-reissue", "en"))
	if !strings.HasPrefix(r.Subject, "[Important] ") {
		t.Errorf("en subject = %q", r.Subject)
	}
	r = render(t, s, "hello", Input{Locale: "en", Data: map[string]any{"company": "Acme"}, Recipient: notice.Recipient{Name: "Ann"}, Date: fixedDate})
	if r.Subject != "Hello from Acme" || r.Text != "Hello Ann\n\nAcme\n" {
		t.Errorf("hello: %q %q", r.Subject, r.Text)
	}
	// The default set is unaffected.
	if mustLoad(t, "").Has("hello") {
		t.Error("default set has the override's template")
	}
}

func TestBrokenOverrideFailsLoad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		file  string // relative to dir/hello
		body  string
		wants []string // substrings of the error
	}{
		{"syntax error", "ja/text.tmpl", "line one\nline two\n{{if .Data.company}}", []string{filepath.Join("hello", "ja", "text.tmpl") + ":3:", "unexpected EOF"}},
		{"unknown function", "en/subject.tmpl", "Hi\n{{shout .Data.company}}", []string{filepath.Join("hello", "en", "subject.tmpl") + ":2:", `"shout" not defined`}},
		{"html syntax error", "en/html.tmpl", "<p>\n{{end}}</p>", []string{filepath.Join("hello", "en", "html.tmpl") + ":2:", "unexpected {{end}}"}},
		{"field not declared", "ja/text.tmpl", "a\nb\n{{.Data.nope}}\n", []string{filepath.Join("hello", "ja", "text.tmpl") + ":3:", ".Data.nope"}},
		{"field not declared in a branch not taken", "en/html.tmpl", "<p>\n{{if false}}{{$.Data.nope}}{{end}}</p>", []string{filepath.Join("hello", "en", "html.tmpl") + ":2:", ".Data.nope"}},
		{"recipient field that does not exist", "ja/text.tmpl", "a\n{{.Recipient.Nickname}}\n", []string{filepath.Join("hello", "ja", "text.tmpl") + ":2:", "Nickname"}},
		{"extra column read as a field", "en/text.tmpl", "a\n{{.Recipient.Extra.order_no}}\n", []string{filepath.Join("hello", "en", "text.tmpl") + ":2:", `"order_no"`, `index .Recipient.Extra "column"`}},
		{"helper fails on sample data", "en/text.tmpl", "a\n\n{{date .Data.company}}\n", []string{filepath.Join("hello", "en", "text.tmpl") + ":3:", "date"}},
		{"empty subject", "ja/subject.tmpl", "{{/* nothing */}}\n", []string{filepath.Join("hello", "ja", "subject.tmpl"), "subject is empty"}},
		{"sample lacks a required field", "meta.json", `{"description": "x", "fields": [{"name": "company", "kind": "string", "required": true, "description": ""}, {"name": "when", "kind": "date", "required": true, "description": ""}], "sample": {"company": "S"}}`, []string{filepath.Join("hello", "meta.json"), `"when"`, "is required"}},
		{"meta with unknown kind", "meta.json", `{"description": "x", "fields": [{"name": "company", "kind": "number", "required": true, "description": ""}], "sample": {"company": "S"}}`, []string{"meta.json", `unknown kind "number"`}},
		{"meta not JSON", "meta.json", `{"description": `, []string{"meta.json"}},
		{"meta with unknown key", "meta.json", `{"description": "x", "fieldz": []}`, []string{"meta.json", "fieldz"}},
		{"unsupported locale", "fr/text.tmpl", "Bonjour\n", []string{filepath.Join("hello", "fr"), `unsupported locale "fr"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeMinimal(t, dir, "hello")
			writeFile(t, filepath.Join(dir, "hello", tt.file), tt.body)
			_, err := Load(dir)
			if err == nil {
				t.Fatal("Load: no error")
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if !strings.HasPrefix(err.Error(), dir) {
				t.Errorf("error %q does not begin with the file's path", err)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		dir := t.TempDir()
		writeMinimal(t, dir, "hello")
		if err := os.Remove(filepath.Join(dir, "hello", "en", "html.tmpl")); err != nil {
			t.Fatal(err)
		}
		_, err := Load(dir)
		if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "hello", "en", "html.tmpl")) {
			t.Errorf("Load: %v", err)
		}
	})
	t.Run("bad template name", func(t *testing.T) {
		dir := t.TempDir()
		writeMinimal(t, dir, "Hello World")
		if _, err := Load(dir); err == nil {
			t.Error("Load: no error")
		}
	})
	t.Run("no such dir", func(t *testing.T) {
		if _, err := Load(filepath.Join(t.TempDir(), "nope")); err == nil {
			t.Error("Load: no error")
		}
	})
}

// TestPackageDirAsOverride checks that the package's own directory, with
// its Go files and testdata, works as an override directory.
func TestPackageDirAsOverride(t *testing.T) {
	t.Parallel()
	s := mustLoad(t, ".")
	if got := len(s.List()); got != 3 {
		t.Errorf("List: %d templates, want 3", got)
	}
}

func TestGolden(t *testing.T) {
	t.Parallel()
	s := mustLoad(t, "")
	for _, name := range names {
		for _, loc := range Locales {
			t.Run(name+"/"+loc, func(t *testing.T) {
				in := sampleInput(t, s, name, loc)
				in.Paragraphs = []string{map[string]string{
					"ja": "本件に関するお問い合わせが大変混み合っております。お電話がつながりにくい場合は、メールでのお問い合わせもご利用ください。",
					"en": "Our phone lines are very busy. If you cannot get through, please email us instead.",
				}[loc]}
				r := render(t, s, name, in)
				got := "Subject: " + r.Subject + "\n\n----- text -----\n" + r.Text + "\n----- html -----\n" + r.HTML
				path := filepath.Join("testdata", "golden", name+"."+loc+".golden")
				if *update {
					writeFile(t, path, got)
					return
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run go test -update to create it)", err)
				}
				if got != string(want) {
					t.Errorf("%s differs from the rendering (go test -update rewrites it); got:\n%s", path, got)
				}
			})
		}
	}
}

// TestRenderConcurrent renders from many goroutines at once, as the worker
// does; run with -race.
func TestRenderConcurrent(t *testing.T) {
	t.Parallel()
	s := mustLoad(t, "")
	done := make(chan error)
	for i := range 8 {
		go func() {
			var err error
			for j := range 20 {
				name, loc := names[(i+j)%len(names)], Locales[j%2]
				in, _ := s.Sample(name, loc)
				in.Date = fixedDate
				if _, e := s.Render(name, in); e != nil && err == nil {
					err = e
				}
			}
			done <- err
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
