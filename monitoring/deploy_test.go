package monitoring_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"go.yaml.in/yaml/v4"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/monitoring"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/smtpsink"
)

const (
	dashboardFile = "../deploy/grafana/oshirase.json"
	alertsFile    = "../deploy/prometheus/alerts.yml"
)

// dashboardExprs returns every query of the Grafana dashboard, and of its
// template variables.
func dashboardExprs(t *testing.T) []string {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var out []string
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			out = append(out, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Definition != "" {
			out = append(out, v.Definition)
		}
	}
	return out
}

// alertExprs returns every rule's expression of the alert rules.
func alertExprs(t *testing.T) []string {
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	var out []string
	var names []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %+v: alert, expr and a summary are required", r)
			}
			if _, err := time.ParseDuration(r.For); err != nil {
				t.Errorf("rule %s: for %q: %v", r.Alert, r.For, err)
			}
			names = append(names, r.Alert)
			out = append(out, r.Expr)
		}
	}
	// The issue names these four.
	for _, want := range []string{"OshiraseCampaignStalled", "OshiraseRelayRefusing", "OshiraseRetryBacklogGrowing", "OshiraseWebhookLag"} {
		if !slices.Contains(names, want) {
			t.Errorf("alert rules lack %s", want)
		}
	}
	return out
}

var (
	strRE      = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	matcherRE  = regexp.MustCompile(`\{[^{}]*\}`)
	rangeRE    = regexp.MustCompile(`\[[^\]]*\]`)
	groupingRE = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	varRE      = regexp.MustCompile(`\$\w+`)
	identRE    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	keywords   = map[string]bool{"and": true, "or": true, "unless": true, "by": true, "without": true, "on": true,
		"ignoring": true, "group_left": true, "group_right": true, "bool": true, "offset": true, "inf": true, "nan": true}
)

// metricNames returns the metric names a PromQL expression selects: the
// identifiers left once strings, label matchers, ranges and groupings are
// taken out, other than functions (followed by "(") and keywords.
func metricNames(expr string) []string {
	if strings.HasPrefix(expr, "label_values(") { // a Grafana variable query
		inner := strings.TrimSuffix(strings.TrimPrefix(expr, "label_values("), ")")
		name, _, _ := strings.Cut(inner, ",")
		expr = strings.TrimSpace(name)
	}
	e := strRE.ReplaceAllString(expr, "")
	e = varRE.ReplaceAllString(e, "")
	e = matcherRE.ReplaceAllString(e, " ")
	e = rangeRE.ReplaceAllString(e, " ")
	e = groupingRE.ReplaceAllString(e, " ")
	var out []string
	for _, loc := range identRE.FindAllStringIndex(e, -1) {
		id := e[loc[0]:loc[1]]
		if keywords[id] || (loc[0] > 0 && (e[loc[0]-1] >= '0' && e[loc[0]-1] <= '9' || e[loc[0]-1] == '.')) {
			continue // a keyword, or a number's tail (1e3, 5m)
		}
		if rest := strings.TrimLeft(e[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // a function or aggregation
		}
		out = append(out, id)
	}
	return out
}

func TestMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sum by (campaign, le) (rate(oshirase_x_bucket{a="b c", d=~"5\\.7"}[5m]))`, []string{"oshirase_x_bucket"}},
		{"time() - max by (c) (a_ts) > 600\nand on (campaign) b == 1 or c offset 5m", []string{"a_ts", "b", "c"}},
		{`deriv(sum(x{s="r"})[15m:1m]) > 0 and y > 1e3`, []string{"x", "y"}},
		{`rate(z[$__rate_interval])`, []string{"z"}},
		{`label_values(oshirase_campaign_recipients, campaign)`, []string{"oshirase_campaign_recipients"}},
	} {
		if got := metricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("metricNames(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

// TestDashboardAndAlertsUseRealMetrics runs the service a little (real
// Redis, a real SMTP server refusing one recipient for good and another
// for now), scrapes /metrics, and checks that every metric the Grafana
// dashboard and the alert rules use is there — or, for a labelled metric
// no event of this run created (a relay refusal), is one the service
// registers. Along the way: no gauge is named _total, every metric says
// what it is, and with promtool installed the rules pass its check.
func TestDashboardAndAlertsUseRealMetrics(t *testing.T) {
	sink, err := smtpsink.Start(smtpsink.Options{Reply: func(st smtpsink.Stage, _, rcpt string, _ int) *smtp.SMTPError {
		switch {
		case st == smtpsink.StageRcpt && strings.HasPrefix(rcpt, "nobody"):
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		case st == smtpsink.StageRcpt && strings.HasPrefix(rcpt, "later"):
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "try again later"}
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	_, url := testenv.Redis(t, testenv.DBMisc)
	cfg := testenv.Config(t, map[string]string{"REDIS_URL": url, "SMTP_URL": sink.URL(), "KEY_PREFIX": "dep", "RETRY_BASE": "1h"})
	st := teststack.StartStack(t, cfg, service.Options{API: true, Worker: true})

	var c notice.Campaign
	if code, body := teststack.Do(t, st.Base, testenv.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), &c); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	csv := "email,name\nok1@example.jp,A\nok2@example.jp,B\nnobody@example.jp,C\nlater@example.jp,D\n"
	if code, body := teststack.Do(t, st.Base, testenv.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/recipients", "text/csv", []byte(csv), nil); code >= 300 {
		t.Fatalf("upload: %d %s", code, body)
	}
	if code, body := teststack.Do(t, st.Base, testenv.AdminKey, "POST", "/v1/campaigns/"+c.ID+"/start", "", nil, nil); code != 202 {
		t.Fatalf("start: %d %s", code, body)
	}
	teststack.WaitCampaign(t, st.Base, c.ID, 30*time.Second, func(c *notice.Campaign) bool {
		return c.Counts.Sent == 2 && c.Counts.Failed == 1 && c.Counts.Retrying == 1
	})
	// The watchdog's sweep gives the campaign its last-progress time.
	var body string
	teststack.Eventually(t, "campaign gauges on /metrics", 15*time.Second, func() bool {
		_, _, body = call(t, st.Base, opBearer, "GET", "/metrics")
		return strings.Contains(body, "oshirase_campaign_last_progress_timestamp_seconds{campaign=\""+c.ID+"\"}")
	})

	scraped := map[string]bool{}
	types := map[string]string{}
	help := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# TYPE "):
			f := strings.Fields(line)
			types[f[2]] = f[3]
		case strings.HasPrefix(line, "# HELP "):
			name, text, _ := strings.Cut(strings.TrimPrefix(line, "# HELP "), " ")
			help[name] = text
		case line != "" && !strings.HasPrefix(line, "#"):
			scraped[identRE.FindString(line)] = true
		}
	}
	described, err := monitoring.Described()
	if err != nil {
		t.Fatal(err)
	}
	known := func(name string) (scrape, registered bool) {
		for _, n := range []string{name, strings.TrimSuffix(name, "_bucket"), strings.TrimSuffix(name, "_sum"), strings.TrimSuffix(name, "_count")} {
			if scraped[n] {
				scrape = true
			}
			if slices.Contains(described, n) {
				registered = true
			}
		}
		return scrape, registered
	}
	used := 0
	for file, exprs := range map[string][]string{dashboardFile: dashboardExprs(t), alertsFile: alertExprs(t)} {
		for _, e := range exprs {
			names := metricNames(e)
			if len(names) == 0 {
				t.Errorf("%s: no metric in %q", file, e)
			}
			for _, n := range names {
				used++
				if s, r := known(n); !s && !r {
					t.Errorf("%s uses %s, which oshirase does not export (expr %q)", file, n, e)
				}
			}
		}
	}
	if used < 30 {
		t.Errorf("only %d metric uses found: the files were not read as meant", used)
	}
	// What this run must have made real series of.
	for _, want := range []string{
		`oshirase_campaign_state{campaign="` + c.ID + `",state="sending"} 1`,
		`oshirase_campaign_state{campaign="` + c.ID + `",state="stalled"} 0`,
		`oshirase_campaign_rate_limit_per_second{campaign="` + c.ID + `"}`,
		`oshirase_smtp_replies_total{class="5xx",code="550",enhanced="5.1.1"} 1`,
		`oshirase_smtp_replies_total{class="4xx",code="451",enhanced="4.7.1"} 1`,
		`oshirase_smtp_replies_total{class="2xx",code="250",`,
		`oshirase_http_requests_total{code="202",method="POST",route="/v1/campaigns/{id}/start"} 1`,
		`oshirase_http_request_duration_seconds_bucket{method="POST",route="/v1/campaigns/{id}/start",le="+Inf"} 1`,
		`oshirase_build_info{goversion="go`,
		`oshirase_smtp_pool_connections_idle `,
		`oshirase_smtp_pool_connections_in_use `,
		`oshirase_smtp_dial_errors_total 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(body, c.ID+"/") || strings.Contains(body, "@example.jp") {
		t.Errorf("/metrics carries a raw path or an address")
	}
	for name, typ := range types {
		if typ == "gauge" && strings.HasSuffix(name, "_total") {
			t.Errorf("gauge %s is named like a counter (_total)", name)
		}
		if len(help[name]) < 15 {
			t.Errorf("metric %s: HELP %q says too little", name, help[name])
		}
	}

	// promtool, where installed (Debian: apt-get install prometheus).
	if path, err := exec.LookPath("promtool"); err == nil {
		out, err := exec.Command(path, "check", "rules", alertsFile).CombinedOutput()
		if err != nil {
			t.Errorf("promtool check rules: %v\n%s", err, out)
		}
	} else {
		t.Log("promtool not installed: rules checked by this test's own reading only")
	}
}
