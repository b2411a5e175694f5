package console

import (
	"fmt"
	"html/template"
	"net/http"
	"time"

	"golang.org/x/text/language"
)

// The console speaks Japanese or English: the hotline staff who answer
// "did you email me?" after a Japanese breach notice read Japanese. The
// language is the one the browser prefers (Accept-Language), or the one
// chosen with ?lang= on the console's page, remembered in a cookie.

const langCookie = "oshirase_lang"

var langMatcher = language.NewMatcher([]language.Tag{language.English, language.Japanese})

// lang is the request's language, "en" or "ja".
func lang(r *http.Request) string {
	if ck, err := r.Cookie(langCookie); err == nil && (ck.Value == "ja" || ck.Value == "en") {
		return ck.Value
	}
	tags, _, _ := language.ParseAcceptLanguage(r.Header.Get("Accept-Language"))
	if _, i, conf := langMatcher.Match(tags...); i == 1 && conf != language.No {
		return "ja"
	}
	return "en"
}

// tr translates format into the request's language and formats it.
func tr(r *http.Request, format string, args ...any) string {
	if t, ok := japanese[format]; ok && lang(r) == "ja" {
		format = t
	}
	return fmt.Sprintf(format, args...)
}

// pages holds the page template per language; its t function translates.
var pages = map[string]*template.Template{"en": parsePage("en"), "ja": parsePage("ja")}

func parsePage(lang string) *template.Template { return parseTemplate(lang, "page.html") }

// parseTemplate parses templates/name with the t function of lang.
func parseTemplate(lang, name string) *template.Template {
	t := func(s string) string { return s }
	if lang == "ja" {
		t = func(s string) string {
			if v, ok := japanese[s]; ok {
				return v
			}
			return s
		}
	}
	return template.Must(template.New(name).Funcs(template.FuncMap{
		"t":       t,
		"fmtTime": fmtTime,
		"fmtTimePtr": func(t *time.Time) string {
			if t == nil {
				return ""
			}
			return fmtTime(*t)
		},
	}).ParseFS(files, "templates/"+name))
}

// fmtTime shows t in the server's time zone (TZ; Asia/Tokyo shows JST).
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format("2006-01-02 15:04:05 MST")
}

// japanese translates the console's English texts; a text without an
// entry shows in English.
var japanese = map[string]string{
	"oshirase support": "oshirase サポート",
	"signed in as":     "ログイン中:",
	"Sign out":         "ログアウト",
	"Sign in with your support or admin API key.": "サポート担当または管理者の API キーでログインしてください。",
	"API key":       "API キー",
	"Sign in":       "ログイン",
	"Email address": "メールアドレス",
	"Search":        "検索",
	"This address is on the suppression list since %s: %s. A resend needs the override.": "このアドレスは %s から配信停止リストにあります（%s）。再送するには「配信停止を無視」を選んでください。",
	"No notice was ever addressed to this address.":                                      "このアドレス宛てのお知らせはありません。",
	"(campaign %s, %s, template %s)":                                                     "（キャンペーン %s、%s、テンプレート %s）",
	"Recipient":                                                                          "宛先",
	"Status":                                                                             "状態",
	"Attempts":                                                                           "試行回数",
	"Sent at":                                                                            "送信日時",
	"Last error":                                                                         "最後のエラー",
	"Attempt at":                                                                         "試行日時",
	"To":                                                                                 "送信先",
	"Delivery":                                                                           "配信",
	"SMTP reply":                                                                         "SMTP 応答",
	"resend #%d":                                                                         "再送 #%d",
	"campaign":                                                                           "一斉送信",
	"accepted":                                                                           "受理",
	"Resend":                                                                             "再送",
	"Requested":                                                                          "依頼日時",
	"By":                                                                                 "依頼者",
	"Reason":                                                                             "理由",
	"Corrected address":                                                                  "訂正後のアドレス",
	"(optional)":                                                                         "（任意）",
	"override suppression":                                                               "配信停止を無視",
	"Refresh":                                                                            "更新",
	"Language":                                                                           "言語",
	"The form could not be read.":                                                        "フォームを読み取れませんでした。",
	"The sign-in form expired; please try again.":                     "ログイン画面の有効期限が切れました。もう一度お試しください。",
	"That key is not valid.":                                          "そのキーは無効です。",
	"Too many wrong keys from this address; try again in %d seconds.": "このアドレスから無効なキーが多すぎます。%d 秒後にもう一度お試しください。",
	"Only support and admin keys may use the support console.":        "サポート担当または管理者のキーだけが利用できます。",
	"Please sign in.":                                            "ログインしてください。",
	"Enter an email address.":                                    "メールアドレスを入力してください。",
	"The resend form is incomplete; search again.":               "再送フォームが不完全です。もう一度検索してください。",
	"Resend #%d queued to %s.":                                   "再送 #%d を %s 宛てに受け付けました。",
	"This resend is already being queued.":                       "この再送はすでに受付処理中です。",
	"This form was already sent; search again for a new resend.": "このフォームは送信済みです。新たに再送するには、もう一度検索してください。",
	"Not resent: %s":                                             "再送できませんでした: %s",
	"e.g. customer called: message deleted":                      "例: お客様から電話、メールを削除してしまった",
}
