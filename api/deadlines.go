package api

import (
	"io"
	"net/http"
	"time"
)

// flow pushes a connection's read and write deadlines on while bytes move,
// for the two requests that may rightly outlast HTTP_READ_TIMEOUT and
// HTTP_WRITE_TIMEOUT: a recipients upload of millions of rows and a report
// download of as many. They are cut only when no byte has moved for the
// timeout, never for taking long while they progress.
type flow struct {
	rc          *http.ResponseController
	read, write time.Duration
	readUntil   time.Time
	writeUntil  time.Time
}

func (s *Server) flow(w http.ResponseWriter) *flow {
	return &flow{rc: http.NewResponseController(w), read: s.cfg.ReadTimeout, write: s.cfg.WriteTimeout}
}

// beforeRead is called before every read of the body: the clock counts from
// when we start waiting for bytes, not from when they were sent (bytes that
// wait in the kernel while Redis is slow do not count against the client).
// The answer that follows the last byte gets its full write timeout too.
// Deadlines are pushed on only once a quarter of their time has passed, so
// a read costs no system call.
func (f *flow) beforeRead() {
	now := time.Now()
	if f.read > 0 && f.readUntil.Sub(now) < f.read*3/4 {
		f.readUntil = now.Add(f.read)
		f.rc.SetReadDeadline(f.readUntil)
	}
	f.beforeWrite()
}

// beforeWrite is called before every write of the answer.
func (f *flow) beforeWrite() {
	now := time.Now()
	if f.write > 0 && f.writeUntil.Sub(now) < f.write*3/4 {
		f.writeUntil = now.Add(f.write)
		f.rc.SetWriteDeadline(f.writeUntil)
	}
}

// flowReader is a request body that keeps its deadlines moving.
type flowReader struct {
	r io.ReadCloser
	f *flow
}

func (fr flowReader) Read(p []byte) (int, error) {
	fr.f.beforeRead()
	return fr.r.Read(p)
}

func (fr flowReader) Close() error { return fr.r.Close() }

// flowWriter is an answer that keeps its write deadline moving.
type flowWriter struct {
	http.ResponseWriter
	f *flow
}

func (fw flowWriter) Write(p []byte) (int, error) {
	fw.f.beforeWrite()
	return fw.ResponseWriter.Write(p)
}

func (fw flowWriter) Unwrap() http.ResponseWriter { return fw.ResponseWriter }
