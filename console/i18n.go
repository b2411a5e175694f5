package console

import (
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"golang.org/x/text/language"

	"github.com/oshirase/oshirase/notice"
)

// statusWords says each recipient status in words (translated by the
// japanese table): "suppressed" is the suppression list (送信停止リスト: the
// address bounced or was blocked), not an unsubscribe (配信停止).
var statusWords = map[notice.Status]string{
	notice.StatusPending:    "waiting to be sent",
	notice.StatusSending:    "being sent",
	notice.StatusRetrying:   "waiting to retry",
	notice.StatusSent:       "sent",
	notice.StatusFailed:     "failed",
	notice.StatusSuppressed: "not sent: suppression list",
	notice.StatusCancelled:  "cancelled",
	notice.StatusBounced:    "bounced",
	notice.StatusComplained: "reported as spam",
}

var campaignWords = map[notice.CampaignStatus]string{
	notice.CampaignDraft:     "draft",
	notice.CampaignSending:   "sending",
	notice.CampaignPaused:    "paused",
	notice.CampaignDone:      "done",
	notice.CampaignCancelled: "cancelled",
}

var fieldWords = map[string]string{
	"customer_id": "customer id", "name": "name", "email": "email address", "phone": "phone number",
}

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
		// status words as the agent reads them (失敗, 送信済み, …)
		"status":    func(s notice.Status) string { return t(statusWords[s]) },
		"cstatus":   func(s notice.CampaignStatus) string { return t(campaignWords[s]) },
		"lang":      func(l string) string { return t(localeName(l)) },
		"uaddr":     unicodeAddr,
		"searchURL": searchURL,
		"field":     func(f string) string { return t(fieldWords[f]) },
		"noticeURL": func(cid string, rid int64, n int, q string) string {
			v := url.Values{"campaign": {cid}, "recipient": {strconv.FormatInt(rid, 10)}, "q": {q}}
			if n > 0 {
				v.Set("resend", strconv.Itoa(n))
			}
			return "/support/notice?" + v.Encode()
		},
		"final": func(s notice.Status) bool {
			switch s {
			case notice.StatusSent, notice.StatusFailed, notice.StatusSuppressed, notice.StatusBounced, notice.StatusComplained:
				return true
			}
			return false
		},
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
	"API key": "API キー",
	"Sign in": "ログイン",
	"Search":  "検索",
	"Customer id, name, email address or phone number": "お客様番号・氏名・メールアドレス・電話番号",
	"All times are in %s.":                             "時刻はすべて %s で表示しています。",
	"Enter at least 3 characters (2 of kana or kanji) of a customer id, name, email address or phone number.":                                             "お客様番号・氏名・メールアドレス・電話番号を 3 文字以上（かな・漢字なら 2 文字以上）入力してください。",
	"More customers match than are shown; add to the search to narrow it.":                                                                                "該当するお客様が多すぎるため一部だけを表示しています。検索語を足して絞り込んでください。",
	"This address is on the suppression list since %s (%s): mail to it bounced or was blocked. A resend to it needs “send despite the suppression list”.": "このアドレスは %s から送信停止リストに載っています（%s）。このアドレス宛てのメールが不達になったか、受信を拒否されたためです。再送するには「送信停止リストに載っていても送る」を選んでください。",
	"No notice matches.": "該当するお知らせはありません。",
	"Try another way the customer may be known: customer id, name as written in kana or kanji, phone number or another address.": "お客様番号、かな・漢字の氏名、電話番号、別のメールアドレスでもお試しください。",
	"No notice was ever addressed to this address.": "このアドレス宛てのお知らせはありません。",
	"(campaign %s: %s)":                             "（一斉送信 %s: %s）",
	"Customer":                                      "お客様",
	"Found by":                                      "一致した項目",
	"customer id":                                   "お客様番号",
	"name":                                          "氏名",
	"email address":                                 "メールアドレス",
	"phone number":                                  "電話番号",
	"Status":                                        "状態",
	"by resend #%d; the first notice: %s":           "再送 #%d により。最初のお知らせ: %s",
	"Language":                                      "言語",
	"Japanese":                                      "日本語",
	"English":                                       "英語",
	"Goes out":                                      "送信予定",
	"about %s":                                      "%s ごろ",
	"when the campaign is resumed (it is paused)":    "一斉送信の再開後（現在一時停止中）",
	"when the campaign is started (not started yet)": "一斉送信の開始後（まだ開始されていません）",
	"soon: the campaign is sending":                  "まもなく（一斉送信中）",
	"Attempts":                                       "試行回数",
	"Sent at":                                        "送信日時",
	"Last error":                                     "最後のエラー",
	"See the notice as it was sent":                  "送信したお知らせの内容を見る",
	"Attempt at":                                     "試行日時",
	"To":                                             "送信先",
	"the customer's address":                         "お客様のアドレス",
	"Delivery":                                       "配信",
	"SMTP reply":                                     "SMTP 応答",
	"resend #%d":                                     "再送 #%d",
	"campaign":                                       "一斉送信",
	"accepted":                                       "受理",
	"outcome unknown":                                "結果不明",
	"Resend":                                         "再送",
	"Requested":                                      "依頼日時",
	"By":                                             "依頼者",
	"Reason":                                         "理由",
	"view":                                           "内容",
	"Corrected address":                              "訂正後のアドレス",
	"(optional)":                                     "（任意）",
	"Language of the resend":                         "再送の言語",
	"send despite the suppression list":              "送信停止リストに載っていても送る",
	"A resend is possible once this notice has gone out: resending it now could deliver it twice.": "このお知らせはまだ送信されていません。今再送すると二重に届くおそれがあるため、送信後に再送できます。",
	"It should go out about %s.":                                      "%s ごろ送信される見込みです。",
	"This notice was cancelled with its campaign and was never sent.": "このお知らせは一斉送信の中止により取り消され、送信されていません。",
	"Previous page":                          "前のページ",
	"Next page":                              "次のページ",
	"Refresh":                                "更新",
	"Campaign":                               "一斉送信",
	"Subject":                                "件名",
	"The notice as it was sent":              "送信したお知らせ",
	"Resend #%d as it was sent":              "再送 #%d で送信したお知らせ",
	"Back to the search":                     "検索結果に戻る",
	"This link is incomplete; search again.": "リンクが不完全です。もう一度検索してください。",
	"This notice no longer exists (its campaign was deleted or its personal data purged).": "このお知らせはもうありません（一斉送信が削除されたか、個人データが消去されました）。",
	// statuses: 送信停止リスト is the list of addresses that bounced or
	// were blocked, not an unsubscribe (配信停止)
	"waiting to be sent":         "送信待ち",
	"being sent":                 "送信中",
	"waiting to retry":           "再試行待ち",
	"sent":                       "送信済み",
	"failed":                     "失敗",
	"not sent: suppression list": "未送信（送信停止リスト）",
	"cancelled":                  "取消（中止）",
	"bounced":                    "不達（返送あり）",
	"reported as spam":           "迷惑メールとして報告",
	"draft":                      "下書き",
	"sending":                    "送信中",
	"paused":                     "一時停止中",
	"done":                       "完了",
	// messages
	"The form could not be read.":                                                "フォームを読み取れませんでした。",
	"The sign-in form expired; please try again.":                                "ログイン画面の有効期限が切れました。もう一度お試しください。",
	"That key is not valid.":                                                     "そのキーは無効です。",
	"Too many wrong keys from this address; try again in %d seconds.":            "このアドレスから無効なキーが多すぎます。%d 秒後にもう一度お試しください。",
	"Only support and admin keys may use the support console.":                   "サポート担当または管理者のキーだけが利用できます。",
	"Please sign in.":                                                            "ログインしてください。",
	"The resend form is incomplete; search again.":                               "再送フォームが不完全です。もう一度検索してください。",
	"Resend #%d queued to %s.":                                                   "再送 #%d を %s 宛てに受け付けました。",
	" It goes in %s.":                                                            "%sで送ります。",
	"This resend is already being queued.":                                       "この再送はすでに受付処理中です。",
	"This form was already sent; search again for a new resend.":                 "このフォームは送信済みです。新たに再送するには、もう一度検索してください。",
	"e.g. customer called: message deleted":                                      "例: お客様から電話、メールを削除してしまった",
	"Not resent: enter the reason for the resend (it is kept in the audit log).": "再送していません: 再送の理由を入力してください（監査ログに記録されます）。",
	"Not resent: the corrected address is not an address a notice can be sent to. Check it for typos: it needs one @ and a domain such as example.jp, in letters a mail server accepts.": "再送していません: 訂正後のアドレスには送信できません。入力に誤りがないか確認してください（@ が 1 つあり、example.jp のようなドメインが必要です。@ より前に全角文字は使えません）。",
	"Not resent: choose Japanese or English.":                                                         "再送していません: 日本語か英語を選んでください。",
	"Not resent: the reason looks like it holds a full card number. Write at most the last 4 digits.": "再送していません: 理由にカード番号全体が含まれているようです。カード番号は下 4 桁までにしてください。",
	"Not resent: the reason is too long (at most 1,000 bytes).":                                       "再送していません: 理由が長すぎます（1,000 バイトまで。全角で約 330 文字）。",
	"Not resent: the form has a mistake; check the reason and the address.":                           "再送していません: 入力に誤りがあります。理由とアドレスを確認してください。",
	"Not resent: you have used your %d resends per hour. Try again in %s.":                            "再送していません: 1 時間あたりの再送上限（%d 件）に達しました。%s後にもう一度お試しください。",
	"Not resent: %s is on the suppression list since %s (%s): mail to it bounced or was blocked. To send anyway, tick “send despite the suppression list” and resend.": "再送していません: %s は %s から送信停止リストに載っています（%s）。このアドレス宛てのメールが不達になったか、受信を拒否されたためです。それでも送る場合は「送信停止リストに載っていても送る」を選んで、もう一度再送してください。",
	"Not resent: the address is on the suppression list: mail to it bounced or was blocked. To send anyway, tick “send despite the suppression list” and resend.":      "再送していません: このアドレスは送信停止リストに載っています（メールが不達になったか、受信を拒否されたため）。それでも送る場合は「送信停止リストに載っていても送る」を選んで、もう一度再送してください。",
	"Not resent: this notice has not been sent yet. Resending it now could deliver it twice; it goes out by itself (see when on its row).":                             "再送していません: このお知らせはまだ送信されていません。今再送すると二重に届くおそれがあります。お知らせは自動で送信されます（送信予定は各行に表示しています）。",
	"Not resent: this campaign's personal data is being deleted; nothing of it can be resent.":                                                                         "再送していません: この一斉送信の個人データを消去中のため、再送できません。",
	"Not resent: this notice was cancelled with its campaign and was never sent.":                                                                                      "再送していません: このお知らせは一斉送信の中止により取り消され、送信されていません。",
	"Not resent: the notice is being changed by someone else; search again and retry.":                                                                                 "再送していません: ほかの操作と重なりました。もう一度検索してから再送してください。",
	"Not resent: this notice no longer exists (its campaign was deleted or its personal data purged). Search again.":                                                   "再送していません: このお知らせはもうありません（一斉送信が削除されたか、個人データが消去されました）。もう一度検索してください。",
	"%d seconds":  "%d 秒",
	"%d min %d s": "%d 分 %d 秒",
	// What came back to a notice's return path after the relay took it.
	"Came back at":   "受信日時",
	"What came back": "返ってきたもの",
	"Report":         "報告内容",
	"Diagnostic":     "診断コード",
	"Reported by":    "報告元",
	"delayed":        "配信遅延の通知",
	"delivered":      "配信完了の通知",
	"complained":     "迷惑メールとして報告",
	"auto-reply":     "自動返信（不在など）",
	"unrecognised":   "判別できないメール",
}
