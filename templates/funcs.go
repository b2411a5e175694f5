package templates

import (
	"fmt"
	"strings"
	"text/template"
	"time"

	"github.com/oshirase/oshirase/notice"
)

// funcMap is the helpers templates of one locale can call:
//
//	date v          "2019-05-28" or a time.Time as 2019年5月28日 (ja) or 28 May 2019 (en)
//	join sep list   the list's items joined by sep
//	lines s         s split into lines (a paragraph's line breaks as <br> in HTML)
//	default def v   v, or def when v is empty
//	last4 s         the last four digits of s, "" if it has fewer
func funcMap(locale string) template.FuncMap {
	return template.FuncMap{
		"date": func(v any) (string, error) { return formatDate(v, locale) },
		"join": func(sep string, v any) (string, error) {
			l, ok := asList(v)
			if !ok {
				return "", fmt.Errorf("join: want a list of strings, got %T", v)
			}
			return strings.Join(l, sep), nil
		},
		"lines": func(s string) []string { return strings.Split(s, "\n") },
		"default": func(def string, v any) any {
			switch x := v.(type) {
			case nil:
				return def
			case string:
				if strings.TrimSpace(x) == "" {
					return def
				}
			case []string:
				if len(x) == 0 {
					return def
				}
			}
			return v
		},
		"last4": last4,
	}
}

func formatDate(v any, locale string) (string, error) {
	var t time.Time
	switch x := v.(type) {
	case time.Time:
		t = x
	case string:
		var err error
		if t, err = time.Parse(dateLayout, x); err != nil {
			return "", fmt.Errorf("date: want a date like 2019-05-28, got %q", x)
		}
	default:
		return "", fmt.Errorf("date: want a date string or time, got %T", v)
	}
	if locale == notice.LocaleJA {
		return fmt.Sprintf("%d年%d月%d日", t.Year(), int(t.Month()), t.Day()), nil
	}
	return t.Format("2 January 2006"), nil
}
