// Package sample holds the fictional company whose card leak the demo and
// the benchmark notify: one place, so both send the same notice.
package sample

import "encoding/json"

// Campaign is the JSON body of POST /v1/campaigns for a card leak modelled
// on the 2019 case, Japanese by default.
func Campaign(name string) []byte {
	b, _ := json.Marshal(map[string]any{
		"name": name, "template": "card-reissue", "default_locale": "ja",
		"from":     map[string]string{"ja": "株式会社サンプル商事 <notice@example.jp>", "en": `"Sample Trading Co., Ltd." <notice@example.jp>`},
		"reply_to": "support@example.jp",
		"data": map[string]any{
			"company":       map[string]string{"ja": "株式会社サンプル商事", "en": "Sample Trading Co., Ltd."},
			"service":       map[string]string{"ja": "サンプル商事オンラインストア", "en": "the Sample Trading online store"},
			"discovered_on": "2019-05-28", "period_start": "2009-05-01", "period_end": "2019-05-27",
			"discovered_how": map[string]string{"ja": "クレジットカード会社からの連絡を受けて調査を行った結果", "en": "after a card company alerted us and we investigated"},
			"cause": map[string]string{
				"ja": "第三者による不正アクセスにより、決済画面のプログラムが改ざんされたことが原因です。",
				"en": "A third party gained unauthorized access to the store and altered its payment page.",
			},
			"secondary_harm": map[string]string{
				"ja": "現時点で、本件に起因する不正利用の報告は受けておりません。",
				"en": "So far we have had no reports of card details from this incident being misused.",
			},
			"card_monitoring": map[string]string{
				"ja": "クレジットカード会社に対し、対象のカードの不正利用の監視を依頼しております。",
				"en": "We have asked the card companies to monitor the affected cards for fraudulent use.",
			},
			"affected_count": map[string]string{"ja": "最大460,795件", "en": "up to 460,795 cards"},
			"leaked_items": map[string][]string{
				"ja": {"クレジットカード番号", "有効期限", "カード名義人名"},
				"en": {"Card number", "Expiry date", "Cardholder name"},
			},
			"actions_taken": map[string][]string{
				"ja": {"クレジットカード決済を停止いたしました", "外部の専門調査機関による調査を実施いたしました", "個人情報保護委員会および警察へ報告いたしました"},
				"en": {"Suspended card payments on the store", "Engaged an independent forensic investigator", "Reported the incident to the Personal Information Protection Commission and the police"},
			},
			"hotline":       map[string]string{"ja": "0120-000-000", "en": "+81-3-0000-0000"},
			"hotline_hours": map[string]string{"ja": "平日 9:00から18:00まで（祝日を除く）", "en": "9:00 to 18:00 JST, weekdays except public holidays"},
			"contact_email": "support@example.jp", "url": "https://www.example.jp/notice/2019",
		},
	})
	return b
}
