// Package faults holds oshirase's fault-injection end-to-end tests: SMTP
// servers that answer 4xx and 5xx or go away, worker processes killed with
// SIGKILL or stopped with SIGTERM, a Redis restarted mid-campaign, pause,
// resume and cancel, and the rate limit shared by several worker processes.
// Every test runs real parts: the oshirase binary, a real Redis and an SMTP
// server (go-smtp) in the test process. The package has no code of its own.
package faults
