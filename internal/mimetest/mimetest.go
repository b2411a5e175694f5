// Package mimetest decodes received messages for tests with the standard
// library's independent MIME parser (net/mail, mime/multipart), not with the
// library that wrote them.
package mimetest

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"strings"

	"golang.org/x/text/encoding/japanese"
)

// Message is a decoded notice.
type Message struct {
	Header  mail.Header
	Subject string
	From    string
	To      string
	Text    string
	HTML    string
	Parts   []string // content types of the alternative parts, in order
}

var dec = &mime.WordDecoder{CharsetReader: charsetReader}

func charsetReader(charset string, r io.Reader) (io.Reader, error) {
	switch strings.ToLower(charset) {
	case "iso-2022-jp":
		return japanese.ISO2022JP.NewDecoder().Reader(r), nil
	case "utf-8", "us-ascii":
		return r, nil
	}
	return nil, fmt.Errorf("unexpected charset %q", charset)
}

// Parse decodes raw into a Message, failing on anything malformed.
func Parse(raw []byte) (*Message, error) {
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("read message: %w", err)
	}
	out := &Message{Header: m.Header}
	if out.Subject, err = dec.DecodeHeader(m.Header.Get("Subject")); err != nil {
		return nil, fmt.Errorf("subject: %w", err)
	}
	if out.From, err = dec.DecodeHeader(m.Header.Get("From")); err != nil {
		return nil, fmt.Errorf("from: %w", err)
	}
	if out.To, err = dec.DecodeHeader(m.Header.Get("To")); err != nil {
		return nil, fmt.Errorf("to: %w", err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		return nil, fmt.Errorf("content-type: %w", err)
	}
	if err := out.walk(mt, params, m.Header.Get("Content-Transfer-Encoding"), m.Body); err != nil {
		return nil, err
	}
	return out, nil
}

func (out *Message) walk(mt string, params map[string]string, cte string, body io.Reader) error {
	if strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%s part: %w", mt, err)
			}
			pmt, pparams, err := mime.ParseMediaType(p.Header.Get("Content-Type"))
			if err != nil {
				return fmt.Errorf("part content-type: %w", err)
			}
			if err := out.walk(pmt, pparams, p.Header.Get("Content-Transfer-Encoding"), p); err != nil {
				return err
			}
		}
	}
	var r io.Reader = body
	switch strings.ToLower(cte) {
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, r)
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	}
	if cs := params["charset"]; cs != "" {
		var err error
		if r, err = charsetReader(cs, r); err != nil {
			return err
		}
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("%s body: %w", mt, err)
	}
	out.Parts = append(out.Parts, mt)
	switch mt {
	case "text/plain":
		out.Text = string(b)
	case "text/html":
		out.HTML = string(b)
	}
	return nil
}
