// Package sample holds the fictional company whose card leak the demo and
// the benchmark notify: one place, so both send the same notice.
package sample

import "encoding/json"

// Campaign is the JSON body of POST /v1/campaigns for a card leak modelled
// on the 2019 case, Japanese by default.
func Campaign(name string) []byte {
	b, _ := json.Marshal(map[string]any{
		"name": name, "template": "card-reissue", "default_locale": "ja",
		"from": "株式会社サンプル商事 <notice@example.jp>", "reply_to": "support@example.jp",
		"data": map[string]any{
			"company":       map[string]string{"ja": "株式会社サンプル商事", "en": "Sample Trading Co., Ltd."},
			"service":       map[string]string{"ja": "サンプル商事オンラインストア", "en": "the Sample Trading online store"},
			"cause":         map[string]string{"ja": "第三者による不正アクセス", "en": "unauthorized access by a third party"},
			"discovered_on": "2019-05-28", "period_start": "2009-05-01", "period_end": "2019-05-27",
			"leaked_items": map[string][]string{
				"ja": {"クレジットカード番号", "有効期限", "カード名義人名"},
				"en": {"Card number", "Expiry date", "Cardholder name"},
			},
			"actions_taken": map[string][]string{
				"ja": {"クレジットカード決済を停止いたしました", "外部の専門調査機関による調査を実施いたしました", "個人情報保護委員会および警察へ報告いたしました"},
				"en": {"Suspended card payments on the store", "Engaged an independent forensic investigator", "Reported the incident to the Personal Information Protection Commission and the police"},
			},
			"hotline":       "0120-000-000",
			"hotline_hours": map[string]string{"ja": "平日 9:00から18:00まで（祝日を除く）", "en": "9:00 to 18:00 JST, weekdays except public holidays"},
			"contact_email": "support@example.jp", "url": "https://www.example.jp/notice/2019",
		},
	})
	return b
}
