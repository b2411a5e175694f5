// Package tasks builds the asynq tasks oshirase enqueues. Payloads carry ids
// only: asynqmon and the asynq CLI show payloads to operators.
package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
)

// Enqueuer is the part of *asynq.Client oshirase uses.
type Enqueuer interface {
	EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// Enqueue enqueues t; a task with the same TaskID already queued is not an
// error, because every task id here names work that is idempotent.
func Enqueue(ctx context.Context, q Enqueuer, t *asynq.Task, opts ...asynq.Option) error {
	_, err := q.EnqueueContext(ctx, t, opts...)
	if errors.Is(err, asynq.ErrTaskIDConflict) || errors.Is(err, asynq.ErrDuplicateTask) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("enqueue %s: %w", t.Type(), err)
	}
	return nil
}

func task(typ string, p any) *asynq.Task {
	b, err := json.Marshal(p)
	if err != nil {
		panic(err) // payloads are plain structs of ids
	}
	return asynq.NewTask(typ, b)
}

// StartAt enqueues the start of campaign cid at at, on the urgent queue so
// that a busy bulk queue does not delay it.
func StartAt(ctx context.Context, q Enqueuer, cid string, at time.Time) error {
	return startAt(ctx, q, cid, at, StartID(cid, at))
}

// StartAgain enqueues a scheduled start once more, under a new id: for a
// start task that ran long before its time (an operator's "run now").
func StartAgain(ctx context.Context, q Enqueuer, cid string, at time.Time) error {
	return startAt(ctx, q, cid, at, fmt.Sprintf("%s:again:%d", StartID(cid, at), time.Now().UnixNano()))
}

func startAt(ctx context.Context, q Enqueuer, cid string, at time.Time, id string) error {
	p := StartPayload{CampaignID: cid, At: at.UnixMilli()}
	return Enqueue(ctx, q, task(TypeStart, p), asynq.Queue(QueueUrgent), asynq.ProcessAt(at),
		asynq.TaskID(id), asynq.MaxRetry(100))
}

// StartID is the task id of campaign cid's start scheduled at at.
func StartID(cid string, at time.Time) string {
	return fmt.Sprintf("start:%s:%d", cid, at.UnixMilli())
}

// Fanout opens a campaign's window of chunk tasks, once per start/resume
// generation (the watchdog tops the window up should this task be lost).
func Fanout(ctx context.Context, q Enqueuer, cid string, gen int64) error {
	return Enqueue(ctx, q, task(TypeFanout, FanoutPayload{CampaignID: cid, Gen: gen}),
		asynq.Queue(QueueBulk), asynq.TaskID(fmt.Sprintf("fanout:%s:%d", cid, gen)), asynq.MaxRetry(1000))
}

// Chunk delivers recipients [from, to). suffix distinguishes a re-enqueued
// chunk (watchdog, hand-back) from the fan-out's own.
func Chunk(ctx context.Context, q Enqueuer, p ChunkPayload, suffix string) error {
	return chunk(ctx, q, p, suffix, QueueBulk, time.Time{})
}

// ChunkPaced is Chunk for the rest of a chunk that waited for its rate, on
// the paced queue, to run at at (zero: at once). asynq keeps scheduled
// tasks by the whole second: the task may run up to a second early.
func ChunkPaced(ctx context.Context, q Enqueuer, p ChunkPayload, suffix string, at time.Time) error {
	return chunk(ctx, q, p, suffix, QueuePaced, at)
}

func chunk(ctx context.Context, q Enqueuer, p ChunkPayload, suffix, queue string, at time.Time) error {
	id := fmt.Sprintf("chunk:%s:%d:%d", p.CampaignID, p.Gen, p.From)
	if suffix != "" {
		id += ":" + suffix
	}
	opts := []asynq.Option{asynq.Queue(queue), asynq.TaskID(id), asynq.MaxRetry(1000)}
	if !at.IsZero() {
		opts = append(opts, asynq.ProcessAt(at))
	}
	return Enqueue(ctx, q, task(TypeChunk, p), opts...)
}

// Deliver sends to one recipient after delay: a retry (queue bulk) or a
// resend / single notice (queue urgent). id must name this delivery.
func Deliver(ctx context.Context, q Enqueuer, p DeliverPayload, queue, id string, delay time.Duration) error {
	opts := []asynq.Option{asynq.Queue(queue), asynq.MaxRetry(1_000_000), asynq.TaskID(id)}
	if delay > 0 {
		opts = append(opts, asynq.ProcessIn(delay))
	}
	return Enqueue(ctx, q, task(TypeDeliver, p), opts...)
}

// Decode reads a task's payload into p.
func Decode(t *asynq.Task, p any) error {
	if err := json.Unmarshal(t.Payload(), p); err != nil {
		return fmt.Errorf("%s payload: %v: %w", t.Type(), err, asynq.SkipRetry)
	}
	return nil
}
