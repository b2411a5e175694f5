package service_test

// End-to-end tests of the two Redis topologies REDIS_URL promises besides a
// single server: Redis Cluster (redis+cluster://) and a Sentinel-managed
// primary (redis+sentinel://). Each starts real redis-server processes of its
// own (never the shared test Redis, which is one plain server) and runs whole
// campaigns through the API, the asynq queue, the worker and SMTP.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/oshirase/oshirase/app"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/service"
	"github.com/oshirase/oshirase/smtpsink"
)

// needRedisTools skips the test when the Redis binaries are missing; CI
// installs them, so there the topology tests always run.
func needRedisTools(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed: this test starts its own Redis Cluster / Sentinel (scripts/test.sh installs redis)", bin)
		}
	}
}

// freePorts returns n distinct free ports. All listeners stay open until
// every port is chosen, so no two of them can be the same.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// startRedis starts a private redis-server on port, in a directory of its
// own, stopped (SIGKILL) when the test ends.
func startRedis(t *testing.T, port int, args ...string) *testenv.RedisServer {
	t.Helper()
	return startRedisWith(t, port, "", nil, args...)
}

// startRedisWith starts a redis-server that requires password (if not "")
// and speaks only TLS (if tl is not nil).
func startRedisWith(t *testing.T, port int, password string, tl *testenv.TLSFiles, args ...string) *testenv.RedisServer {
	t.Helper()
	s := &testenv.RedisServer{Port: port, Dir: t.TempDir(), Password: password,
		Args: append([]string{"--appendonly", "no"}, args...)}
	if password != "" {
		s.Args = append(s.Args, "--requirepass", password)
	}
	if tl != nil {
		s.Args = append(s.Args, tl.RedisArgs(port)...)
		s.TLS = tl.Client
	}
	s.Start(t)
	t.Cleanup(s.Stop)
	return s
}

func plainClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	return clientFor(t, addr, nil)
}

// clientFor is a client of the server at addr, over TLS if tl is not nil.
func clientFor(t *testing.T, addr string, tl *testenv.TLSFiles) *redis.Client {
	t.Helper()
	o := &redis.Options{Addr: addr}
	if tl != nil {
		o.TLSConfig = tl.Client
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

// startRedisCluster starts n masters (no replicas) and joins them into one
// cluster with redis-cli, as an operator would; with tl, clients and the
// cluster bus speak only TLS.
func startRedisCluster(t *testing.T, n int, tl *testenv.TLSFiles) []*testenv.RedisServer {
	t.Helper()
	// Each node needs its client port and its cluster bus port. The bus port
	// is set explicitly (cluster-port, Redis 7): the default, port+10000, is
	// past 65535 for most ephemeral ports.
	ports := freePorts(t, 2*n)
	nodes := make([]*testenv.RedisServer, n)
	create := []string{"--cluster", "create"}
	if tl != nil {
		create = append([]string{"--tls", "--cacert", tl.CA, "--cert", tl.Cert, "--key", tl.Key}, create...)
	}
	for i := range nodes {
		args := []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(ports[2*i+1]), "--cluster-node-timeout", "5000"}
		if tl != nil {
			args = append(args, "--tls-cluster", "yes")
		}
		nodes[i] = startRedisWith(t, ports[2*i], "", tl, args...)
		create = append(create, nodes[i].Addr())
	}
	create = append(create, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "redis-cli", create...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	// redis-cli returns once the slots are assigned; every node must also
	// have heard of every other and consider the cluster healthy.
	for _, nd := range nodes {
		c := clientFor(t, nd.Addr(), tl)
		teststack.Eventually(t, "cluster_state:ok on "+nd.Addr(), 15*time.Second, func() bool {
			info, err := c.ClusterInfo(context.Background()).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok") &&
				strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", n)) &&
				strings.Contains(info, "cluster_slots_assigned:16384")
		})
	}
	return nodes
}

// topoStack is a running oshirase (API and worker) whose warnings and errors
// are kept.
type topoStack struct {
	svc  *service.Service
	base string
	logs *testenv.LogBuffer
}

// startTopoStack is teststack.StartStack with the log kept: a CROSSSLOT
// logged by a background loop (asynq's, the watchdog's) fails the test as
// surely as one in an API answer, and a failed test shows the log.
func startTopoStack(t *testing.T, env map[string]string) *topoStack {
	t.Helper()
	cfg := testenv.Config(t, env)
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.APIKeys = teststack.APIKeys
	logs := &testenv.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	svc, err := service.New(context.Background(), cfg, log, service.Options{API: true, Worker: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Listen(); err != nil {
		svc.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("service stopped with %v", err)
		}
		svc.Close()
		if strings.Contains(logs.String(), "CROSSSLOT") {
			t.Errorf("CROSSSLOT in the service log")
		}
		if l := logs.String(); l != "" && (t.Failed() || testing.Verbose()) {
			t.Logf("service warnings and errors:\n%s", l)
		}
	})
	return &topoStack{svc: svc, base: "http://" + svc.Addr(), logs: logs}
}

// topoCSV makes n recipients for one campaign: row 1 is shared, an address
// every campaign has (for the cross-campaign support look-up); the others
// are the campaign's own, tagged with tag.
func topoCSV(tag, shared string, n int) string {
	var b strings.Builder
	b.WriteString("email,name,locale,customer_id,card_brand,card_last4\n")
	for i := 1; i <= n; i++ {
		loc, name, addr := "ja", fmt.Sprintf("山田 太郎%d", i), fmt.Sprintf("%s-user%04d@example.jp", tag, i)
		if i%2 == 0 {
			loc, name, addr = "en", fmt.Sprintf("Jane Doe %d", i), fmt.Sprintf("%s-user%04d@example.com", tag, i)
		}
		if i == 1 {
			addr = shared
		}
		fmt.Fprintf(&b, "%s,%s,%s,C%05d,VISA,%04d\n", addr, name, loc, i, 1000+i)
	}
	return b.String()
}

// msgIDPattern reads campaign, recipient and resend number back out of a
// Message-ID (worker.MessageID: c.<cid>.r.<rid>[.s<n>]@host).
var msgIDPattern = regexp.MustCompile(`^<?c\.([a-z0-9]+)\.r\.(\d+)(?:\.s(\d+))?@`)

// delivery is one message the sink received, by what it was for.
type delivery struct {
	campaign  string
	recipient int64
	resend    int
}

// tally counts the sink's messages per (campaign, recipient, resend).
func tally(t *testing.T, sink *smtpsink.Sink) map[delivery]int {
	t.Helper()
	out := map[delivery]int{}
	for _, m := range sink.Messages() {
		msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
		if err != nil {
			t.Fatalf("message to %v: %v", m.To, err)
		}
		id := msg.Header.Get("Message-Id")
		g := msgIDPattern.FindStringSubmatch(id)
		if g == nil {
			t.Fatalf("message to %v: Message-ID %q is not oshirase's", m.To, id)
		}
		rid, _ := strconv.ParseInt(g[2], 10, 64)
		rs, _ := strconv.Atoi(g[3])
		out[delivery{g[1], rid, rs}]++
	}
	return out
}

// sentTo is how many first deliveries (not resends) campaign cid has at the
// sink, counting duplicates.
func sentTo(d map[delivery]int, cid string) (messages, distinct int) {
	for k, n := range d {
		if k.campaign == cid && k.resend == 0 {
			messages += n
			distinct++
		}
	}
	return messages, distinct
}

// checkDelivered asserts that recipients 1..n of cid each got their notice
// at least once, and that no more than maxDup extra copies went out in all
// (-1: any number, only reported).
func checkDelivered(t *testing.T, d map[delivery]int, cid string, n int, maxDup int) {
	t.Helper()
	dups := 0
	for rid := int64(1); rid <= int64(n); rid++ {
		switch k := d[delivery{cid, rid, 0}]; {
		case k == 0:
			t.Errorf("campaign %s: recipient %d never received its notice", cid, rid)
		case k > 1:
			dups += k - 1
		}
	}
	if msgs, distinct := sentTo(d, cid); distinct != n {
		t.Errorf("campaign %s: %d distinct recipients at the sink (%d messages), want %d", cid, distinct, msgs, n)
	}
	switch {
	case dups == 0:
	case maxDup < 0:
		t.Logf("campaign %s: %d duplicate messages", cid, dups)
	case dups <= maxDup:
		t.Logf("campaign %s: %d duplicate messages (allowed up to %d)", cid, dups, maxDup)
	default:
		t.Errorf("campaign %s: %d duplicate messages, want at most %d", cid, dups, maxDup)
	}
}

func createCampaign(t *testing.T, base string, extra map[string]any) string {
	t.Helper()
	var c notice.Campaign
	code, body := teststack.Do(t, base, teststack.AdminKey, "POST", "/v1/campaigns", "application/json", teststack.CampaignJSON(extra), &c)
	if code != 201 || c.ID == "" {
		t.Fatalf("create campaign: %d %s", code, body)
	}
	return c.ID
}

func uploadCSV(t *testing.T, base, cid, csv string, want int) {
	t.Helper()
	var up struct {
		Accepted int   `json:"accepted"`
		Rejected []any `json:"rejected"`
	}
	code, body := teststack.Do(t, base, teststack.AdminKey, "POST", "/v1/campaigns/"+cid+"/recipients", "text/csv", []byte(csv), &up)
	if code != 200 || up.Accepted != want || len(up.Rejected) != 0 {
		t.Fatalf("upload to %s: %d %s", cid, code, body)
	}
}

func campaignAction(t *testing.T, base, cid, action string, want int) {
	t.Helper()
	if code, body := teststack.Do(t, base, teststack.AdminKey, "POST", "/v1/campaigns/"+cid+"/"+action, "", nil, nil); code != want {
		t.Fatalf("%s %s: %d %s, want %d", action, cid, code, body, want)
	}
}

func checkReady(t *testing.T, base string) {
	t.Helper()
	var ready struct {
		Ready  bool              `json:"ready"`
		Checks map[string]string `json:"checks"`
	}
	if code, body := teststack.Do(t, base, "", "GET", "/readyz", "", nil, &ready); code != 200 || !ready.Ready || ready.Checks["redis"] != "ok" {
		t.Fatalf("/readyz: %d %s", code, body)
	}
}

func checkCounts(t *testing.T, c *notice.Campaign, n int64) {
	t.Helper()
	k := c.Counts
	if k.Total != n || k.Sent != n || k.Pending != 0 || k.Sending != 0 || k.Retrying != 0 || k.Failed != 0 || k.Cancelled != 0 || k.Suppressed != 0 {
		t.Errorf("campaign %s counts: %+v, want %d sent of %d", c.ID, k, n, n)
	}
	if c.StartedAt == nil || c.FinishedAt == nil {
		t.Errorf("campaign %s: started_at/finished_at missing", c.ID)
	}
}

func isDone(c *notice.Campaign) bool { return c.Status == notice.CampaignDone }

// TestCampaignOnRedisCluster runs campaigns on a 3-master Redis Cluster. The
// campaigns are picked so that their keys live on different nodes: every Lua
// script runs on a node that holds only some campaigns, while the global keys
// (campaign list, address index, asynq's queues) sit on other nodes. Any
// script or transaction that mixes slots fails with CROSSSLOT.
func TestCampaignOnRedisCluster(t *testing.T) {
	testenv.Slow(t, "a private Redis Cluster")
	needRedisTools(t)
	const (
		prefix     = "topo"
		perCamp    = 300
		shared     = "Shared.Person@Example.JP" // in every campaign: the look-up spans nodes
		pausedRate = 150                        // msg/s: the paused campaign runs long enough to pause it
	)
	nodes := startRedisCluster(t, 3, nil)
	var addrs []string
	for _, n := range nodes {
		addrs = append(addrs, n.Addr())
	}
	sink, err := smtpsink.Start(smtpsink.Options{Keep: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	st := startTopoStack(t, map[string]string{
		"REDIS_URL": "redis+cluster://" + strings.Join(addrs, ","), "KEY_PREFIX": prefix,
		"SMTP_URL": sink.URL(), "WORKER_CONCURRENCY": "8", "CHUNK_SIZE": "25",
		// A global rate far above what the test sends still puts the shared
		// limiter key (outside every campaign's slot) on the hot path.
		"SMTP_RATE": "5000", "CLAIM_TTL": "3s", "RETRY_BASE": "200ms",
	})
	checkReady(t, st.base)

	// Which node serves a campaign: the slot of its hash tag, looked up in
	// the cluster's own slot map.
	ctx := context.Background()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { cc.Close() })
	slots, err := cc.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	nodeOf := func(cid string) string {
		slot, err := cc.ClusterKeySlot(ctx, prefix+":{c:"+cid+"}:state").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range slots {
			if int64(r.Start) <= slot && slot <= int64(r.End) {
				return r.Nodes[0].Addr
			}
		}
		t.Fatalf("slot %d of campaign %s is not served", slot, cid)
		return ""
	}

	// Campaign ids are random: create campaigns until one sits on each
	// node (about 5.5 tries on average; 60 fail to cover three nodes with
	// probability below 1e-10). The first is kept whatever its node, with a
	// per-campaign rate so that it can be paused mid-way; the spares are
	// cancelled (which is itself a script run on their node).
	type camp struct{ id, node, tag string }
	var camps []camp
	onNode := map[string]bool{}
	for try := 0; len(camps) < len(nodes); try++ {
		if try == 60 {
			t.Fatalf("60 campaigns did not cover %d nodes: %v", len(nodes), onNode)
		}
		extra := map[string]any{"name": fmt.Sprintf("cluster %d", try)}
		if try == 0 {
			extra["rate"] = pausedRate
		}
		id := createCampaign(t, st.base, extra)
		node := nodeOf(id)
		if onNode[node] {
			campaignAction(t, st.base, id, "cancel", 200)
			continue
		}
		onNode[node] = true
		camps = append(camps, camp{id: id, node: node, tag: fmt.Sprintf("c%d", len(camps))})
	}
	for _, c := range camps {
		uploadCSV(t, st.base, c.id, topoCSV(c.tag, shared, perCamp), perCamp)
	}
	start := time.Now()
	for _, c := range camps {
		campaignAction(t, st.base, c.id, "start", 202)
	}

	// Pause the rate-limited campaign part-way: at 150/s its 300 take 2 s,
	// so it is surely still sending when it has sent 30.
	paused := camps[0].id
	teststack.WaitCampaign(t, st.base, paused, 10*time.Second, func(c *notice.Campaign) bool { return c.Counts.Sent >= 30 })
	campaignAction(t, st.base, paused, "pause", 200)
	// Messages already in flight finish; then nothing more goes out.
	p := teststack.WaitCampaign(t, st.base, paused, 10*time.Second, func(c *notice.Campaign) bool {
		return c.Status == notice.CampaignPaused && c.Counts.Sending == 0
	})
	pausedAt := time.Now()
	if p.Counts.Sent >= perCamp {
		t.Fatalf("campaign %s sent everything before the pause: %+v", paused, p.Counts)
	}
	for _, c := range camps[1:] {
		checkCounts(t, teststack.WaitCampaign(t, st.base, c.id, 20*time.Second, isDone), perCamp)
	}
	// However quickly the others finished, give the paused one half a
	// second (75 messages at its rate) in which it must send nothing.
	time.Sleep(500*time.Millisecond - time.Since(pausedAt))
	if msgs, _ := sentTo(tally(t, sink), paused); int64(msgs) != p.Counts.Sent {
		t.Errorf("paused campaign: %d messages at the sink, %d recorded sent", msgs, p.Counts.Sent)
	}
	if c := teststack.WaitCampaign(t, st.base, paused, time.Second, func(*notice.Campaign) bool { return true }); c.Status != notice.CampaignPaused || c.Counts.Sent != p.Counts.Sent {
		t.Fatalf("paused campaign moved on: %s %+v, was %+v", c.Status, c.Counts, p.Counts)
	}
	campaignAction(t, st.base, paused, "resume", 200)
	checkCounts(t, teststack.WaitCampaign(t, st.base, paused, 20*time.Second, isDone), perCamp)
	t.Logf("%d campaigns × %d recipients on %d nodes sent in %s (one paused at %d)", len(camps), perCamp, len(nodes),
		time.Since(start).Round(time.Millisecond), p.Counts.Sent)

	// Every recipient of every campaign got exactly one notice.
	d := tally(t, sink)
	for _, c := range camps {
		checkDelivered(t, d, c.id, perCamp, 0)
	}
	if got, want := sink.Count(), int64(len(camps)*perCamp); got != want {
		t.Errorf("sink received %d messages, want %d", got, want)
	}

	// Support look-up: the address index (one key, on its own node) points
	// into campaigns on every node.
	lookup := func() app.LookupResult {
		var res app.LookupResult
		if code, body := teststack.Do(t, st.base, teststack.SupportKey, "GET", "/v1/recipients?email="+strings.ToLower(shared), "", nil, &res); code != 200 {
			t.Fatalf("look-up: %d %s", code, body)
		}
		return res
	}
	res := lookup()
	var found []string
	for _, n := range res.Notices {
		if n.ID != 1 || n.Status != notice.StatusSent || n.MessageID == "" || n.SentAt == nil {
			t.Errorf("look-up notice: %+v", n)
		}
		found = append(found, n.Campaign.ID)
	}
	var want []string
	for _, c := range camps {
		want = append(want, c.id)
	}
	slices.Sort(found)
	slices.Sort(want)
	if !slices.Equal(found, want) {
		t.Fatalf("look-up found campaigns %v, want %v", found, want)
	}

	// A resend (a read-modify-write of the recipient's resends under WATCH,
	// then the urgent queue) to the shared address of a campaign on another
	// node than the first.
	rc := camps[1].id
	code, body := teststack.Do(t, st.base, teststack.SupportKey, "POST", "/v1/campaigns/"+rc+"/recipients/1/resend",
		"application/json", []byte(`{"reason":"customer lost the first notice"}`), nil)
	if code != 202 {
		t.Fatalf("resend: %d %s", code, body)
	}
	teststack.Eventually(t, "resend delivered", 10*time.Second, func() bool { return tally(t, sink)[delivery{rc, 1, 1}] == 1 })
	teststack.Eventually(t, "resend recorded", 5*time.Second, func() bool {
		for _, n := range lookup().Notices {
			if n.Campaign.ID == rc {
				return len(n.Resends) == 1 && n.Resends[0].Status == notice.StatusSent
			}
		}
		return false
	})

	// A single notice (POST /v1/notifications) makes, starts and sends a
	// one-recipient campaign of its own, wherever its slot falls.
	var req map[string]any
	json.Unmarshal(teststack.CampaignJSON(nil), &req)
	nb, _ := json.Marshal(map[string]any{
		"template": "card-reissue", "locale": "en", "from": req["from"], "data": req["data"],
		"recipient": map[string]any{"email": "single@example.com", "card_last4": "4242"},
	})
	var na app.NotificationAnswer
	if code, body := teststack.Do(t, st.base, teststack.AdminKey, "POST", "/v1/notifications", "application/json", nb, &na); code != 202 {
		t.Fatalf("notification: %d %s", code, body)
	}
	teststack.WaitCampaign(t, st.base, na.CampaignID, 10*time.Second, func(c *notice.Campaign) bool {
		return c.Status == notice.CampaignDone && c.Counts.Sent == 1
	})
	if k := tally(t, sink)[delivery{na.CampaignID, na.RecipientID, 0}]; k != 1 {
		t.Errorf("notification: %d messages, want 1", k)
	}

	// The keys themselves, as each node holds them: all of one campaign's
	// keys on one node (the node its slot says), and the campaigns spread
	// over every node. KEYS on a cluster node lists only that node's keys.
	for _, c := range camps {
		var holders []string
		var keys []string
		for _, n := range nodes {
			ks, err := plainClient(t, n.Addr()).Keys(ctx, prefix+":{c:"+c.id+"}:*").Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(ks) > 0 {
				holders = append(holders, n.Addr())
				keys = append(keys, ks...)
			}
		}
		if len(holders) != 1 || holders[0] != c.node {
			t.Errorf("campaign %s: keys on nodes %v, want only on %s", c.id, holders, c.node)
		}
		// (:rs appears with a first resend, :claim and :chunks only while
		// work is under way, :rej with a rejected upload row.)
		for _, suffix := range []string{"def", "state", "counts", "rcpt", "st", "dlv", "emails"} {
			if !slices.Contains(keys, prefix+":{c:"+c.id+"}:"+suffix) {
				t.Errorf("campaign %s: key %s missing (has %v)", c.id, suffix, keys)
			}
		}
	}
	if len(onNode) < 2 {
		t.Errorf("campaigns on %d node(s), want them spread", len(onNode))
	}

	// The queue metrics read asynq's keys through the cluster client too.
	code, body = teststack.Do(t, st.base, teststack.OperatorKey, "GET", "/metrics", "", nil, nil)
	if code != 200 || !bytes.Contains(body, []byte("\nasynq_up 1\n")) || !bytes.Contains(body, []byte(`asynq_queue_size{queue="bulk"}`)) {
		t.Errorf("/metrics: %d, asynq_up not 1 or no bulk queue:\n%s", code, grepLines(body, "asynq_"))
	}
	// asynqmon reads queues, servers and the cluster's layout (CLUSTER
	// KEYSLOT / NODES per queue) through the same client.
	for _, path := range []string{"/monitoring/api/queues", "/monitoring/api/servers", "/monitoring/api/redis_info"} {
		code, body := teststack.Do(t, st.base, teststack.AdminKey, "GET", path, "", nil, nil)
		if code != 200 || !bytes.Contains(body, []byte(`bulk`)) {
			t.Errorf("%s: %d %.500s", path, code, body)
		}
	}
	checkReady(t, st.base)
	// Nothing in this run is meant to fail: on a healthy cluster any error
	// the service logged (a CROSSSLOT, a script touching a key of another
	// node, a MOVED not followed) is a bug.
	if errs := grepLines([]byte(st.logs.String()), "level=ERROR"); errs != "" {
		t.Errorf("errors in the service log:\n%s", errs)
	}
}

func grepLines(b []byte, sub string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// sentinel is a running redis-server --sentinel.
type sentinel struct {
	addr string
	c    *redis.SentinelClient
}

// startSentinel runs one Sentinel watching the primary at port as mymaster.
// One Sentinel is quorum 1: enough to test the client side of a failover.
// With passwords, the Sentinel requires pw.sentinel of its clients and
// authenticates to the primary with pw.primary; with tl it speaks only TLS,
// to its clients and to the primary.
func startSentinel(t *testing.T, primaryPort int, pw passwords, tl *testenv.TLSFiles) *sentinel {
	t.Helper()
	dir := t.TempDir()
	port := freePorts(t, 1)[0]
	conf := filepath.Join(dir, "sentinel.conf") // Sentinel rewrites it: it must be writable
	text := fmt.Sprintf(`port %d
bind 127.0.0.1
dir %s
logfile %s
sentinel monitor mymaster 127.0.0.1 %d 1
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 5000
`, port, dir, filepath.Join(dir, "sentinel.log"), primaryPort)
	if pw.primary != "" {
		text += "sentinel auth-pass mymaster " + pw.primary + "\n"
	}
	if pw.sentinel != "" {
		text += "requirepass " + pw.sentinel + "\n"
	}
	if tl != nil {
		text += fmt.Sprintf("port 0\ntls-port %d\ntls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\ntls-replication yes\n",
			port, tl.Cert, tl.Key, tl.CA)
	}
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	s := runSentinel(t, conf, dir, port, pw.sentinel, tl)
	want := fmt.Sprintf("127.0.0.1:%d", primaryPort)
	teststack.Eventually(t, "sentinel up and watching mymaster", 10*time.Second, func() bool { return s.master() == want })
	return s
}

// runSentinel starts redis-server --sentinel with the configuration file
// conf (in dir, which it rewrites), killed when the test ends (its log shown
// if the test failed), and returns a client of it.
func runSentinel(t *testing.T, conf, dir string, port int, password string, tl *testenv.TLSFiles) *sentinel {
	t.Helper()
	cmd := exec.Command("redis-server", conf, "--sentinel")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sentinel: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "sentinel.log")); err == nil {
				t.Logf("sentinel log:\n%s", b)
			}
		}
	})
	o := &redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), Password: password}
	if tl != nil {
		o.TLSConfig = tl.Client
	}
	s := &sentinel{addr: o.Addr, c: redis.NewSentinelClient(o)}
	t.Cleanup(func() { s.c.Close() })
	return s
}

// passwords of a Sentinel setup ("" = none).
type passwords struct{ primary, sentinel string }

// master is the primary's address as the Sentinel announces it ("" when unknown).
func (s *sentinel) master() string {
	v, err := s.c.GetMasterAddrByName(context.Background(), "mymaster").Result()
	if err != nil || len(v) != 2 {
		return ""
	}
	return net.JoinHostPort(v[0], v[1])
}

// goodReplica reports whether the Sentinel lists addr as a replica it could
// promote (connected, not down).
func (s *sentinel) goodReplica(addr string) bool {
	rs, err := s.c.Replicas(context.Background(), "mymaster").Result()
	if err != nil {
		return false
	}
	for _, r := range rs {
		if net.JoinHostPort(r["ip"], r["port"]) == addr && r["flags"] == "slave" && r["master-link-status"] == "ok" {
			return true
		}
	}
	return false
}

// sentinelURL is the REDIS_URL of mymaster behind the Sentinel at addr.
func sentinelURL(addr string, pw passwords) string {
	u := "redis+sentinel://"
	if pw.primary != "" {
		u += ":" + url.PathEscape(pw.primary) + "@"
	}
	u += addr + "/mymaster"
	if pw.sentinel != "" {
		u += "?sentinel_password=" + url.QueryEscape(pw.sentinel)
	}
	return u
}

func infoField(t *testing.T, c *redis.Client, section, field string) string {
	t.Helper()
	info, err := c.Info(context.Background(), section).Result()
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return v
		}
	}
	return ""
}

// TestCampaignOnRedisSentinel runs a campaign through a Sentinel-managed
// primary: steadily, and with a forced failover to a replica part-way.
//
// Replication is asynchronous, and Sentinel announces the new primary only
// once it has seen the promoted replica report itself a master, up to a
// second after promoting it. Whatever the old primary accepts in between is
// lost, a recipient's "sent" among it, and that recipient is sent again: with
// the default settings, about a second's worth of messages (~150 of 150/s in
// trials). With min-replicas-to-write 1 the old primary refuses writes the
// moment its replica leaves it; the worker retries them on the new primary,
// so only messages already in flight may repeat (at most WORKER_CONCURRENCY).
// Either way nothing may be lost: the watchdog re-takes what the failover
// left claimed, leased or unqueued.
func TestCampaignOnRedisSentinel(t *testing.T) {
	testenv.Slow(t, "a private Sentinel set-up")
	needRedisTools(t)
	const (
		n           = 300
		concurrency = 8
		// Rate-limited (2 s for 300) so that a failover lands part-way.
		rate = 150
	)
	for _, tc := range []struct {
		name        string
		failover    bool
		minReplicas bool // the primary runs with min-replicas-to-write 1
		maxDup      int  // extra copies allowed (-1: any, reported)
		pw          passwords
	}{
		// Primary and Sentinel each with a password of its own: the URL
		// carries the primary's as user info, the Sentinel's as a parameter.
		{name: "steady", maxDup: 0, pw: passwords{primary: "primary-secret", sentinel: "sentinel-secret"}},
		{name: "failover", failover: true, minReplicas: true, maxDup: concurrency},
		{name: "failover with default replication", failover: true, maxDup: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ports := freePorts(t, 2)
			// A replica's first sync would wait 5 s (repl-diskless-sync-delay)
			// for more replicas to share it.
			primaryArgs := []string{"--repl-diskless-sync-delay", "0"}
			if tc.minReplicas {
				primaryArgs = append(primaryArgs, "--min-replicas-to-write", "1", "--min-replicas-max-lag", "5")
			}
			primary := startRedisWith(t, ports[0], tc.pw.primary, nil, primaryArgs...)
			var replica *testenv.RedisServer
			if tc.failover {
				// The replica is in sync before the Sentinel starts, so the
				// Sentinel's first look at the primary already lists it.
				replica = startRedis(t, ports[1], "--replicaof", "127.0.0.1", strconv.Itoa(primary.Port))
				rc := plainClient(t, replica.Addr())
				teststack.Eventually(t, "replica in sync", 10*time.Second, func() bool {
					return infoField(t, rc, "replication", "master_link_status") == "up"
				})
			}
			sen := startSentinel(t, primary.Port, tc.pw, nil)
			if tc.failover {
				teststack.Eventually(t, "sentinel sees the replica", 15*time.Second, func() bool { return sen.goodReplica(replica.Addr()) })
			}

			sink, err := smtpsink.Start(smtpsink.Options{Keep: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sink.Close() })
			st := startTopoStack(t, map[string]string{
				"REDIS_URL": sentinelURL(sen.addr, tc.pw), "KEY_PREFIX": "sen",
				"SMTP_URL": sink.URL(), "WORKER_CONCURRENCY": strconv.Itoa(concurrency), "CHUNK_SIZE": "25",
				// Short claims let the watchdog take over quickly what a
				// failover left claimed, leased or unqueued.
				"CLAIM_TTL": "2s", "RETRY_BASE": "200ms",
			})
			checkReady(t, st.base)
			cid := createCampaign(t, st.base, map[string]any{"name": "sentinel " + tc.name, "rate": rate})
			uploadCSV(t, st.base, cid, topoCSV("s", "shared@example.jp", n), n)
			start := time.Now()
			campaignAction(t, st.base, cid, "start", 202)

			if tc.failover {
				// At 150/s the campaign takes 2 s: fail over a third of the way.
				teststack.WaitCampaign(t, st.base, cid, 10*time.Second, func(c *notice.Campaign) bool { return c.Counts.Sent >= n/3 })
				if err := sen.c.Failover(context.Background(), "mymaster").Err(); err != nil {
					t.Fatalf("SENTINEL FAILOVER: %v", err)
				}
				at, sent := time.Now(), sink.Count()
				teststack.Eventually(t, "sentinel promotes the replica", 15*time.Second, func() bool { return sen.master() == replica.Addr() })
				t.Logf("failover at %d of %d sent: the new primary was announced after %s", sent, n, time.Since(at).Round(time.Millisecond))
			}

			done := teststack.WaitCampaign(t, st.base, cid, 25*time.Second, isDone)
			checkCounts(t, done, n)
			t.Logf("%d recipients sent in %s", n, time.Since(start).Round(time.Millisecond))
			// Late duplicates (a retry still queued) would arrive now.
			time.Sleep(300 * time.Millisecond)
			checkDelivered(t, tally(t, sink), cid, n, tc.maxDup)
			checkReady(t, st.base)
			if tc.failover {
				// The state the API shows lives on the new primary.
				nc := plainClient(t, replica.Addr())
				if role := infoField(t, nc, "replication", "role"); role != "master" {
					t.Errorf("new primary's role: %q", role)
				}
				// Without waiting for replicas a write the old primary took
				// just before the switch (even "done") can be lost; the
				// watchdog finds what is left and finishes it in seconds.
				teststack.Eventually(t, "campaign done on the new primary", 30*time.Second, func() bool {
					v, err := nc.HGet(context.Background(), "sen:{c:"+cid+"}:state", "status").Result()
					return err == nil && v == "done"
				})
			}
			if strings.Contains(st.logs.String(), "CROSSSLOT") {
				t.Errorf("CROSSSLOT in the service log")
			}
		})
	}
}
