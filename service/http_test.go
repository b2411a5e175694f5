package service_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
)

// httpStack runs an API and a worker-only process (METRICS_ADDR) with the
// given HTTP settings, and returns the two addresses.
func httpStack(t *testing.T, env map[string]string) (apiAddr, metricsAddr string, st *teststack.Stack) {
	t.Helper()
	_, url := testenv.Redis(t, testenv.DBService)
	vars := map[string]string{"REDIS_URL": url, "SMTP_URL": "smtp://127.0.0.1:1", "KEY_PREFIX": "http"}
	for k, v := range env {
		vars[k] = v
	}
	st = teststack.StartStack(t, testenv.Config(t, vars), service.Options{API: true})
	vars["METRICS_ADDR"] = "127.0.0.1:0"
	w := teststack.StartStack(t, testenv.Config(t, vars), service.Options{Worker: true})
	teststack.Eventually(t, "worker's METRICS_ADDR", 5*time.Second, func() bool { return w.Svc.MetricsAddr() != "" })
	return strings.TrimPrefix(st.Base, "http://"), w.Svc.MetricsAddr(), st
}

// request sends one keep-alive request on conn and reads its answer.
func request(t *testing.T, conn net.Conn, path string) int {
	t.Helper()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// closedWithin reports whether the server closes conn within d (reading
// and discarding whatever it still sends).
func closedWithin(conn net.Conn, d time.Duration) (bool, time.Duration) {
	start := time.Now()
	conn.SetReadDeadline(start.Add(d))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false, time.Since(start)
	}
	return true, time.Since(start)
}

// TestHTTPIdleConnectionsClosed: keep-alive connections that go quiet after
// a request (here unauthenticated ones, 401) are closed after
// HTTP_IDLE_TIMEOUT, on the API's listener and on a worker's METRICS_ADDR.
func TestHTTPIdleConnectionsClosed(t *testing.T) {
	apiAddr, metricsAddr, _ := httpStack(t, map[string]string{"HTTP_IDLE_TIMEOUT": "1s"})
	for _, tc := range []struct{ name, addr, path string }{
		{"api", apiAddr, "/v1/campaigns"},
		{"worker metrics", metricsAddr, "/metrics"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var conns []net.Conn
			for range 20 {
				c, err := net.Dial("tcp", tc.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if code := request(t, c, tc.path); code != 401 {
					t.Fatalf("GET %s: %d, want 401", tc.path, code)
				}
				conns = append(conns, c)
			}
			for i, c := range conns {
				// Generous: the timeout is 1 s; without one they stay open.
				if ok, after := closedWithin(c, 15*time.Second); !ok {
					t.Fatalf("idle connection %d still open after %s", i, after.Round(time.Millisecond))
				}
			}
		})
	}
}

// TestHTTPStalledBodyCut: a body announced as 2 GB that never comes is cut
// after HTTP_READ_TIMEOUT, on a JSON endpoint and on the upload endpoint;
// an upload that keeps sending, slowly, for longer than the timeout is not.
func TestHTTPStalledBodyCut(t *testing.T) {
	apiAddr, _, st := httpStack(t, map[string]string{"HTTP_READ_TIMEOUT": "1s", "HTTP_WRITE_TIMEOUT": "1s"})
	var c notice.Campaign
	if code, body := teststack.Do(t, st.Base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(nil), &c); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	for _, tc := range []struct{ name, path, ctype, start string }{
		{"json", "/v1/campaigns", "application/json", `{"name":`},
		{"upload", "/v1/campaigns/" + c.ID + "/recipients", "text/csv", "email\na@example.jp\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", apiAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s",
				tc.path, teststack.AdminKey, tc.ctype, int64(2)<<30, tc.start)
			if ok, after := closedWithin(conn, 15*time.Second); !ok {
				t.Fatalf("a stalled body still holds the connection after %s", after.Round(time.Millisecond))
			}
		})
	}
	t.Run("slow upload that progresses", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			fmt.Fprint(pw, "email\n")
			// 3 s in all, three times the read and write timeouts, but a
			// row every 300 ms.
			for i := range 10 {
				time.Sleep(300 * time.Millisecond)
				fmt.Fprintf(pw, "slow%d@example.jp\n", i)
			}
			pw.Close()
		}()
		req, _ := http.NewRequest("POST", st.Base+"/v1/campaigns/"+c.ID+"/recipients", pr)
		req.Header.Set("Authorization", "Bearer "+teststack.AdminKey)
		req.Header.Set("Content-Type", "text/csv")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("slow upload: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"accepted":10`) {
			t.Fatalf("slow upload: %d %s", resp.StatusCode, b)
		}
	})
}

// TestHTTPConnectionCap: past HTTP_MAX_CONNECTIONS a new connection is not
// served until one of the open ones closes.
func TestHTTPConnectionCap(t *testing.T) {
	apiAddr, _, _ := httpStack(t, map[string]string{"HTTP_MAX_CONNECTIONS": "3"})
	var open []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", apiAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if code := request(t, c, "/healthz"); code != 200 {
			t.Fatalf("healthz: %d", code)
		}
		open = append(open, c)
	}
	extra, err := net.Dial("tcp", apiAddr) // the kernel takes it; the server does not
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	fmt.Fprint(extra, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(extra)
	extra.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := br.Peek(1); err == nil {
		t.Fatal("a 4th connection was served with HTTP_MAX_CONNECTIONS=3")
	}
	open[0].Close()
	extra.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("once a connection closed, the waiting one: %v %v", resp, err)
	}
	resp.Body.Close()
}
