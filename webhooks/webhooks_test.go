package webhooks

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// TestSignMatchesStandardWebhooks checks Sign against the spec's own test
// vector and against the reference library's verifier.
func TestSignMatchesStandardWebhooks(t *testing.T) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	ts := time.Unix(1614265330, 0)
	body := []byte(`{"test": 2432232314}`)
	got, err := Sign([]string{secret}, "msg_p5jXN8AQM9LWM0D4loKWxJek", ts, body)
	if err != nil {
		t.Fatal(err)
	}
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Errorf("signature %s, want the spec's %s", got, want)
	}
	// Two secrets (a rotation's overlap): the library accepts either.
	old, fresh := NewSecret(), NewSecret()
	now := time.Now()
	sig, err := Sign([]string{fresh, old}, "msg_1", now, body)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set("webhook-id", "msg_1")
	h.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	h.Set("webhook-signature", sig)
	for _, s := range []string{old, fresh} {
		wh, err := standardwebhooks.NewWebhook(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := wh.Verify(body, h); err != nil {
			t.Errorf("verify with one of the two secrets: %v", err)
		}
	}
	wh, _ := standardwebhooks.NewWebhook(NewSecret())
	if err := wh.Verify(body, h); err == nil {
		t.Error("a third secret verified")
	}
}

func TestPublicAndCheckURL(t *testing.T) {
	for _, c := range []struct {
		addr   string
		public bool
	}{
		{"8.8.8.8", true}, {"2001:4860::8888", true},
		{"127.0.0.1", false}, {"10.1.2.3", false}, {"172.16.0.1", false}, {"192.168.1.1", false},
		{"169.254.169.254", false}, {"100.64.0.1", false}, {"0.0.0.0", false}, {"::1", false},
		{"fe80::1", false}, {"fc00::1", false}, {"::ffff:127.0.0.1", false},
	} {
		if got := Public(netip.MustParseAddr(c.addr)); got != c.public {
			t.Errorf("Public(%s) = %v", c.addr, got)
		}
	}
	for _, c := range []struct {
		url     string
		private bool
		ok      bool
	}{
		{"https://hooks.example.com/x", false, true},
		{"http://127.0.0.1:8080/x", false, false},
		{"http://127.0.0.1:8080/x", true, true},
		{"http://[::1]/x", false, false},
		{"http://localhost/x", false, false},
		{"http://169.254.169.254/latest/meta-data", false, false},
		{"ftp://example.com/", false, false},
		{"/relative", false, false},
		{"https://user:pw@example.com/", false, false},
	} {
		if msg := CheckURL(c.url, c.private); (msg == "") != c.ok {
			t.Errorf("CheckURL(%s, %v) = %q", c.url, c.private, msg)
		}
	}
}

// TestClientRefusesPrivateTargets: the guard is at connection time, so a
// name that resolves inwards is refused too, not only an address literal.
func TestClientRefusesPrivateTargets(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	u := "http://localhost:" + srv.URL[len("http://127.0.0.1:"):]
	if _, err := Client(false).Get(u); !errors.Is(err, ErrPrivate) {
		t.Errorf("a name resolving to loopback: %v, want ErrPrivate", err)
	}
	resp, err := Client(true).Get(u)
	if err != nil {
		t.Fatalf("allowed: %v", err)
	}
	resp.Body.Close()
}

func TestRetryDelay(t *testing.T) {
	if d := RetryDelay(3, &retryAfter{status: 429, after: 7 * time.Second}, nil); d != 7*time.Second {
		t.Errorf("Retry-After 7: %s", d)
	}
	for n, base := range map[int]time.Duration{0: 5 * time.Second, 4: 80 * time.Second, 20: time.Hour} {
		for range 50 {
			d := RetryDelay(n, errors.New("x"), nil)
			if d < base/2 || d > base*3/2 {
				t.Fatalf("retry %d: %s outside %s±50%%", n, d, base)
			}
		}
	}
	if d := parseRetryAfter("120", time.Now()); d != 2*time.Minute {
		t.Errorf("Retry-After: 120 → %s", d)
	}
}
