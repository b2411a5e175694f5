package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/oshirase/oshirase/internal/apiclient"
	"github.com/oshirase/oshirase/internal/sample"
	"github.com/oshirase/oshirase/notice"
	"github.com/oshirase/oshirase/store"
)

func setInt(p *int64, v int64) { atomic.StoreInt64(p, v) }
func getInt(p *int64) int64    { return atomic.LoadInt64(p) }

// client calls the oshirase API.
type client struct{ apiclient.Client }

func (c *client) healthz(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, "GET", c.Base+"/healthz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("healthz: %s", resp.Status)
	}
	return nil
}

// CSV streams n synthetic recipients (70% Japanese) without building the
// file in memory; ids start at first so runs never collide.
func CSV(n, first int) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		bw := make([]byte, 0, 64<<10)
		bw = append(bw, "email,name,locale,customer_id,card_brand,card_last4,segment\n"...)
		names := [...]string{"佐藤 太郎", "鈴木 花子", "高橋 一郎", "田中 美咲", "伊藤 健太", "渡辺 陽菜", "山本 翔"}
		for i := first; i < first+n; i++ {
			if i%10 < 7 {
				bw = append(bw, "customer"...)
				bw = strconv.AppendInt(bw, int64(i), 10)
				bw = append(bw, "@example.jp,"...)
				bw = append(bw, names[i%len(names)]...)
				bw = append(bw, ",ja,C"...)
			} else {
				bw = append(bw, "customer"...)
				bw = strconv.AppendInt(bw, int64(i), 10)
				bw = append(bw, "@example.com,Emma Smith,en,C"...)
			}
			bw = strconv.AppendInt(bw, int64(i), 10)
			bw = append(bw, ",VISA,"...)
			bw = append(bw, fmt.Sprintf("%04d", i%10000)...)
			bw = append(bw, ",retail\n"...)
			if len(bw) > 60<<10 {
				if _, err := pw.Write(bw); err != nil {
					return
				}
				bw = bw[:0]
			}
		}
		pw.Write(bw)
		pw.Close()
	}()
	return pr
}

type uploadAnswer struct {
	Accepted int `json:"accepted"`
	Rejected int `json:"rejected_count"`
	Lines    int `json:"lines"`
}

var next = 1 // first synthetic id of the next upload

func (e *env) upload(ctx context.Context, c *client, name string, n int, rate float64) (string, *uploadAnswer, time.Duration, error) {
	var camp notice.Campaign
	body := sample.Campaign(name)
	if rate > 0 {
		var m map[string]any
		json.Unmarshal(body, &m)
		m["rate"] = rate
		body, _ = json.Marshal(m)
	}
	if err := c.Do(ctx, "POST", "/v1/campaigns", "application/json", bytes.NewReader(body), &camp); err != nil {
		return "", nil, 0, fmt.Errorf("create campaign: %w", err)
	}
	var up uploadAnswer
	start := time.Now()
	err := c.Do(ctx, "POST", "/v1/campaigns/"+camp.ID+"/recipients", "text/csv", CSV(n, next), &up)
	el := time.Since(start)
	next += n
	if err != nil {
		return "", nil, 0, fmt.Errorf("upload: %w", err)
	}
	if up.Accepted != n {
		return "", nil, 0, fmt.Errorf("upload: %d accepted, %d rejected of %d", up.Accepted, up.Rejected, n)
	}
	return camp.ID, &up, el, nil
}

// deliver sends a campaign of n recipients into the sink and measures it.
// It also returns Redis' used_memory growth over upload and delivery.
func (e *env) deliver(ctx context.Context, n int) (*Delivery, int64, error) {
	c := &client{apiclient.Client{Base: e.base, Key: e.key}}
	mem0, _ := usedMemory(ctx, e.rdb)
	id, _, _, err := e.upload(ctx, c, fmt.Sprintf("bench %d", n), n, 0)
	if err != nil {
		return nil, 0, err
	}
	procs, workers, api := e.oshirase(), e.workerSet(), procSet{e.api.Process.Pid}
	workers.resetPeak()
	api.resetPeak() // the upload before is measured on its own (Ingest)
	cpu0, rcpu0, rcv0 := procs.cpu(), e.redisCPU(), e.received()
	start := time.Now()
	var camp notice.Campaign
	if err := c.Do(ctx, "POST", "/v1/campaigns/"+id+"/start", "", nil, &camp); err != nil {
		return nil, 0, err
	}
	e.logf("deliver %d: started campaign %s", n, id)
	lastLog := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
		if err := c.Do(ctx, "GET", "/v1/campaigns/"+id, "", nil, &camp); err != nil {
			return nil, 0, err
		}
		if camp.Status == notice.CampaignDone || camp.Status == notice.CampaignCancelled {
			break
		}
		if time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			e.logf("deliver %d: %d sent, %d failed, %d retrying, %.0f msg/s", n, camp.Counts.Sent, camp.Counts.Failed,
				camp.Counts.Retrying, float64(camp.Counts.Sent)/time.Since(start).Seconds())
		}
		if time.Since(start) > 10*time.Minute {
			return nil, 0, fmt.Errorf("not done after 10 minutes: %+v", camp.Counts)
		}
	}
	el := time.Since(start)
	d := &Delivery{
		Recipients: n, Sent: camp.Counts.Sent, Elapsed: el,
		CPU: procs.cpu() - cpu0, RedisCPU: e.redisCPU() - rcpu0, PeakRSS: workers.peak(), APIPeakRSS: api.peak(), Received: -1,
	}
	if rcv0 >= 0 {
		// smtp-sink -c updates its counter once a second: give it time.
		waitFor(ctx, 3*time.Second, func() error {
			if e.received()-rcv0 < d.Sent {
				return fmt.Errorf("sink counted %d", e.received()-rcv0)
			}
			return nil
		})
		d.Received = e.received() - rcv0
	}
	if d.Sent != int64(n) {
		e.note("deliver %d: only %d sent (%+v)", n, d.Sent, camp.Counts)
	}
	mem1, _ := usedMemory(ctx, e.rdb)
	e.logf("deliver %d: %d sent in %s, %.0f msg/s", n, d.Sent, el.Round(time.Millisecond), d.Rate())
	return d, mem1 - mem0, nil
}

func (e *env) redisCPU() time.Duration {
	if e.redis == nil {
		return 0
	}
	d, _ := cpuTime(e.redis.Process.Pid)
	return d
}

// ingest uploads n rows through the API and measures rows/s and the API
// process's peak memory.
func (e *env) ingest(ctx context.Context, n int) (*Ingest, error) {
	c := &client{apiclient.Client{Base: e.base, Key: e.key}}
	api := procSet{e.api.Process.Pid}
	api.resetPeak()
	mem0, _ := usedMemory(ctx, e.rdb)
	cpu0 := api.cpu()
	e.logf("ingest: uploading %d rows", n)
	// One message a second: the campaign is started only to time its
	// fan-out, then cancelled.
	id, up, el, err := e.upload(ctx, c, "bench ingest", n, 1)
	if err != nil {
		return nil, err
	}
	mem1, _ := usedMemory(ctx, e.rdb)
	in := &Ingest{Rows: up.Lines - 1, Accepted: up.Accepted, Elapsed: el, PeakRSS: api.peak(), CPU: api.cpu() - cpu0, RedisBytes: mem1 - mem0}
	e.logf("ingest: %d rows in %s", n, el.Round(time.Millisecond))
	if in.Fanout, err = e.fanout(ctx, c, id); err != nil {
		return nil, fmt.Errorf("fan-out: %w", err)
	}
	e.logf("ingest: fan-out of %d recipients in %s", n, in.Fanout.Round(time.Millisecond))
	return in, nil
}

// fanout starts campaign id and times how long it takes until its first
// chunk tasks are on the queue (the fan-out opens the campaign's window of
// chunks whatever its size; the rest are handed out as chunks end), then
// cancels the campaign.
func (e *env) fanout(ctx context.Context, c *client, id string) (time.Duration, error) {
	st := store.New(e.rdb, e.keyPrefix())
	start := time.Now()
	if err := c.Do(ctx, "POST", "/v1/campaigns/"+id+"/start", "", nil, nil); err != nil {
		return 0, err
	}
	cs, err := st.State(ctx, id)
	if err != nil {
		return 0, err
	}
	err = waitFor(ctx, 5*time.Minute, func() error {
		next, err := st.FanoutCursor(ctx, id, cs.Gen)
		if err != nil {
			return err
		}
		if next <= 1 {
			return fmt.Errorf("fan-out has not handed out a chunk of %d recipients", cs.Seq)
		}
		return nil
	})
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	if err := c.Do(ctx, "POST", "/v1/campaigns/"+id+"/cancel", "", nil, nil); err != nil {
		return 0, err
	}
	return took, nil
}
