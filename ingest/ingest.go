// Package ingest turns a recipients upload (CSV or JSON, up to millions of
// rows) into validated recipients, one at a time, without holding the file:
// each record comes out as a Row or as a Rejection that says line, field and
// why. Storing them is another package's job.
package ingest

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"slices"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/transform"

	"github.com/oshirase/oshirase/notice"
)

// Format is an upload's format.
type Format int

const (
	CSV Format = iota
	JSON
)

func (f Format) String() string {
	if f == JSON {
		return "JSON"
	}
	return "CSV"
}

// FormatFromContentType maps a Content-Type (parameters allowed) to a Format.
func FormatFromContentType(ct string) (Format, error) {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return 0, fmt.Errorf("Content-Type %q: want text/csv or application/json", ct)
	}
	switch mt {
	// Browsers on Windows label .csv files application/vnd.ms-excel; a real
	// .xls then fails the encoding check with a clear error.
	case "text/csv", "application/csv", "text/comma-separated-values", "application/vnd.ms-excel":
		return CSV, nil
	case "application/json":
		return JSON, nil
	}
	return 0, fmt.Errorf("Content-Type %q: want text/csv or application/json", mt)
}

// Row is one accepted record.
type Row struct {
	Line      int // CSV: physical line the record starts on (header = 1); JSON: 1-based array index
	Recipient notice.Recipient
	Warnings  []Warning // what was changed (an address normalised), with Line set
}

// Rejection is one refused record. Error never repeats a card number.
type Rejection struct {
	Line  int    `json:"line"`
	Field string `json:"field"` // "" when the record as a whole is wrong
	Error string `json:"error"`
	// Card: the field looked like a full card number (counted and logged
	// by the caller, without the number).
	Card bool `json:"-"`
}

// Error is a fatal problem with an upload's structure: nothing after it can
// be read. Rows returned before it are good.
type Error struct {
	Line int    // CSV line it concerns, 0 if none (JSON says where in Msg)
	Msg  string // what is wrong, for the uploader
	Err  error  // the cause, if any (io.ErrUnexpectedEOF for a cut-off upload)
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

const (
	// peekBytes is how much of an upload the charset is guessed from.
	peekBytes = 64 << 10
	// maxRecordBytes bounds one CSV record or JSON element. A legitimate one
	// is at most a few hundred KiB; without a bound an unclosed quote would
	// make encoding/csv buffer the rest of a 100 MB upload as one field.
	maxRecordBytes = 1 << 20
)

// Column kinds of a CSV header.
const (
	colExtra = iota
	colEmail
	colName
	colLocale
	colCustomerID
	colCardBrand
	colCardLast4
)

var knownCols = map[string]int{
	"email": colEmail, "name": colName, "locale": colLocale,
	"customer_id": colCustomerID, "card_brand": colCardBrand, "card_last4": colCardLast4,
}

// Parser reads one upload. It is not safe for concurrent use.
type Parser struct {
	format  Format
	charset string
	line    int
	err     error // sticky: io.EOF or the fatal error
	lim     *limitReader

	// CSV
	cr     *csv.Reader
	kinds  []int    // per column
	names  []string // per column, lower case
	nExtra int

	// JSON
	dec *json.Decoder
	idx int
}

// NewParser starts reading r: it guesses the charset and reads the CSV
// header or the JSON array's opening bracket. A UTF-8 BOM is skipped. A CSV
// that is not UTF-8 but reads cleanly as Shift_JIS (what Excel writes in
// Japan) is converted as it streams. Locales are left empty when absent:
// defaulting is the campaign's business.
func NewParser(r io.Reader, f Format) (*Parser, error) {
	br := bufio.NewReaderSize(r, peekBytes)
	head, err := br.Peek(peekBytes)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read upload: %w", err)
	}
	full := len(head) == peekBytes
	if bytes.HasPrefix(head, []byte("\xef\xbb\xbf")) {
		head = head[3:]
		br.Discard(3)
	}
	if bytes.HasPrefix(head, []byte("\xff\xfe")) || bytes.HasPrefix(head, []byte("\xfe\xff")) {
		return nil, &Error{Msg: "upload is UTF-16 (Excel's \"Unicode Text\"); save it as \"CSV UTF-8\""}
	}
	p := &Parser{format: f, charset: notice.CharsetUTF8}
	var in io.Reader = br
	if full {
		head = trimPartialRune(head)
	}
	if !utf8.Valid(head) {
		if f == JSON {
			return nil, &Error{Msg: "upload is not UTF-8 (JSON must be UTF-8)"}
		}
		// The decoder does not fail: it puts U+FFFD where the input is not
		// Shift_JIS. A double-byte character may be cut at the end of the peek.
		dec, _, err := transform.Bytes(japanese.ShiftJIS.NewDecoder(), head)
		if full {
			dec = bytes.TrimSuffix(dec, []byte("\ufffd"))
		}
		if err != nil || bytes.ContainsRune(dec, utf8.RuneError) {
			return nil, &Error{Msg: "upload is not UTF-8 or Shift_JIS; save the CSV as UTF-8"}
		}
		p.charset = "shift_jis"
		in = transform.NewReader(br, japanese.ShiftJIS.NewDecoder())
	}
	p.lim = &limitReader{r: in}
	switch f {
	case CSV:
		p.cr = csv.NewReader(p.lim)
		p.cr.FieldsPerRecord = -1 // a row with the wrong count is that row's problem
		p.cr.ReuseRecord = true
		if err := p.readHeader(); err != nil {
			return nil, err
		}
	case JSON:
		p.dec = json.NewDecoder(p.lim)
		p.dec.UseNumber()
		tok, err := p.dec.Token()
		if errors.Is(err, io.EOF) {
			return nil, &Error{Msg: "JSON upload is empty: want an array of objects"}
		}
		if err != nil {
			return nil, p.jsonError("JSON upload", err)
		}
		if d, ok := tok.(json.Delim); !ok || d != '[' {
			return nil, &Error{Msg: "JSON upload must be an array of objects"}
		}
	default:
		return nil, fmt.Errorf("unknown format %d", f)
	}
	return p, nil
}

// trimPartialRune drops a UTF-8 sequence cut off at the end of b.
func trimPartialRune(b []byte) []byte {
	for i := 1; i <= utf8.UTFMax-1 && i <= len(b); i++ {
		c := b[len(b)-i]
		if c < utf8.RuneSelf {
			return b
		}
		if utf8.RuneStart(c) {
			if !utf8.FullRune(b[len(b)-i:]) {
				return b[:len(b)-i]
			}
			return b
		}
	}
	return b
}

// Columns is a CSV upload's header, lower case (nil for JSON).
func (p *Parser) Columns() []string { return p.names }

// Charset is "utf-8" or "shift_jis": what the upload was read as.
func (p *Parser) Charset() string { return p.charset }

// Line is how far the parser got: the line the last CSV record started on,
// or the index of the last JSON element read.
func (p *Parser) Line() int { return p.line }

func (p *Parser) readHeader() error {
	rec, err := p.cr.Read()
	if errors.Is(err, io.EOF) {
		return &Error{Msg: "CSV upload is empty: a header row with an email column is required"}
	}
	if err != nil {
		return &Error{Line: 1, Msg: "CSV header: " + csvMsg(err), Err: err}
	}
	p.line, _ = p.cr.FieldPos(0)
	p.kinds = make([]int, len(rec))
	p.names = make([]string, len(rec))
	seen := make(map[string]bool, len(rec))
	for i, h := range rec {
		h = strings.ToLower(strings.TrimSpace(h))
		if rej := checkExtraName(h); rej != nil && h != "" {
			return &Error{Line: p.line, Msg: fmt.Sprintf("CSV header: column %d: %s", i+1, strings.TrimPrefix(rej.Error, "an extra field's "))}
		}
		switch {
		case h == "":
			return &Error{Line: p.line, Msg: fmt.Sprintf("CSV header: column %d has no name; name it or delete the column", i+1)}
		case seen[h]:
			return &Error{Line: p.line, Msg: fmt.Sprintf("CSV header: column %q appears twice", h)}
		}
		seen[h] = true
		p.names[i] = h
		p.kinds[i] = knownCols[h] // colExtra when unknown
		if p.kinds[i] == colExtra {
			p.nExtra++
		}
	}
	if !seen["email"] {
		return &Error{Line: p.line, Msg: "CSV header has no email column"}
	}
	if p.nExtra > MaxExtraFields {
		return &Error{Line: p.line, Msg: fmt.Sprintf("CSV header has %d extra columns; at most %d are allowed", p.nExtra, MaxExtraFields)}
	}
	return nil
}

func csvMsg(err error) string {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// Next returns the next record: a Row, or a Rejection, or the error io.EOF at
// the end. Any other error is fatal: it says where and why, and every later
// call returns it again.
func (p *Parser) Next() (Row, *Rejection, error) {
	if p.err != nil {
		return Row{}, nil, p.err
	}
	p.lim.n = 0
	var row Row
	var rej *Rejection
	var err error
	if p.format == JSON {
		row, rej, err = p.nextJSON()
	} else {
		row, rej, err = p.nextCSV()
	}
	if err != nil {
		p.err = err
	}
	return row, rej, err
}

func (p *Parser) nextCSV() (Row, *Rejection, error) {
	for {
		rec, err := p.cr.Read()
		var pe *csv.ParseError
		if errors.As(err, &pe) && (errors.Is(pe.Err, csv.ErrBareQuote) || errors.Is(pe.Err, csv.ErrQuote)) {
			// encoding/csv has read the broken record to its line's end and
			// goes on with the next line: one bad row, not a bad upload. (A
			// quote left open runs to the end of the upload, or to the
			// record size limit, which is fatal.)
			p.line = pe.StartLine
			return Row{}, &Rejection{Line: pe.StartLine, Error: "CSV quoting: " + pe.Err.Error() + " (a field with a quote, comma or line break must be in double quotes, with inner quotes doubled)"}, nil
		}
		if err != nil {
			return Row{}, nil, p.csvError(err)
		}
		line, _ := p.cr.FieldPos(0)
		p.line = line
		if blank(rec) {
			continue // a blank line, or an empty row as Excel writes it (",,,")
		}
		if len(rec) != len(p.kinds) {
			return Row{}, &Rejection{Line: line, Error: fmt.Sprintf("%d fields, the header has %d", len(rec), len(p.kinds))}, nil
		}
		var r notice.Recipient
		for i, v := range rec {
			switch p.kinds[i] {
			case colEmail:
				r.Email = v
			case colName:
				r.Name = v
			case colLocale:
				r.Locale = v
			case colCustomerID:
				r.CustomerID = v
			case colCardBrand:
				r.CardBrand = v
			case colCardLast4:
				r.CardLast4 = v
			default:
				if v == "" {
					continue
				}
				if r.Extra == nil {
					r.Extra = make(map[string]string, p.nExtra)
				}
				r.Extra[p.names[i]] = v
			}
		}
		rej, warns := Check(&r)
		if rej != nil {
			rej.Line = line
			return Row{}, rej, nil
		}
		for i := range warns {
			warns[i].Line = line
		}
		// The strings share one allocation per record (encoding/csv makes
		// one string of the record and slices it), so keeping them is cheap.
		return Row{Line: line, Recipient: r, Warnings: warns}, nil, nil
	}
}

// csvError turns a csv.Reader error other than a quoting one into a fatal
// error, or io.EOF.
func (p *Parser) csvError(err error) error {
	if errors.Is(err, io.EOF) {
		return io.EOF
	}
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		p.line = pe.StartLine
		return &Error{Line: pe.StartLine, Msg: pe.Err.Error(), Err: err}
	}
	if errors.Is(err, errRecordTooLong) {
		return &Error{Msg: fmt.Sprintf("after line %d: a record is longer than %d bytes; is a quote left open?", p.line, maxRecordBytes), Err: err}
	}
	return fmt.Errorf("after line %d: %w", p.line, err)
}

func blank(rec []string) bool {
	for _, v := range rec {
		if strings.TrimSpace(v) != "" {
			return false
		}
	}
	return true
}

func (p *Parser) nextJSON() (Row, *Rejection, error) {
	if !p.dec.More() {
		tok, err := p.dec.Token()
		if err != nil {
			return Row{}, nil, p.jsonError(fmt.Sprintf("after element %d", p.idx), err)
		}
		if d, ok := tok.(json.Delim); !ok || d != ']' {
			return Row{}, nil, &Error{Msg: fmt.Sprintf("after element %d: unexpected %v", p.idx, tok)}
		}
		if _, err := p.dec.Token(); !errors.Is(err, io.EOF) {
			return Row{}, nil, &Error{Msg: fmt.Sprintf("data after the closing ] (byte %d)", p.dec.InputOffset())}
		}
		return Row{}, nil, io.EOF
	}
	p.idx++
	p.line = p.idx
	var elem json.RawMessage
	if err := p.dec.Decode(&elem); err != nil {
		return Row{}, nil, p.jsonError(fmt.Sprintf("element %d", p.idx), err)
	}
	if len(elem) == 0 || elem[0] != '{' {
		return Row{}, &Rejection{Line: p.idx, Error: "element is not an object"}, nil
	}
	// encoding/json keeps the last of two equal names: a reviewer reading
	// the file sees the first, oshirase would send to the second.
	if key, dup := duplicateKey(elem); dup {
		rej := &Rejection{Line: p.idx, Field: key, Error: "given twice in the same object; keep one"}
		if LooksLikeCardNumber(key) {
			rej.Field, rej.Card = "", true
			rej.Error = "a field name given twice " + msgCard
		}
		return Row{}, rej, nil
	}
	var raw map[string]any
	dec := json.NewDecoder(bytes.NewReader(elem))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return Row{}, nil, p.jsonError(fmt.Sprintf("element %d", p.idx), err)
	}
	rej := p.fromJSON(raw)
	if rej == nil {
		var r notice.Recipient
		fillJSON(&r, raw)
		var warns []Warning
		if rej, warns = Check(&r); rej == nil {
			for i := range warns {
				warns[i].Line = p.idx
			}
			return Row{Line: p.idx, Recipient: r, Warnings: warns}, nil, nil
		}
	}
	rej.Line = p.idx
	return Row{}, rej, nil
}

// duplicateKey reports the first name that one object of the JSON value b
// (valid JSON) gives twice, at any depth.
func duplicateKey(b []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	// One set of names per open object; nil for an open array.
	var stack []map[string]bool
	expectKey := func() bool { return len(stack) > 0 && stack[len(stack)-1] != nil }
	afterKey := false // the token just read was a name; its value comes next
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", false // io.EOF: the end; nothing else here, b is valid
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{':
				stack = append(stack, map[string]bool{})
			case '[':
				stack = append(stack, nil)
			default:
				stack = stack[:len(stack)-1]
			}
			afterKey = false
			continue
		}
		if !afterKey && expectKey() {
			k, _ := tok.(string)
			if stack[len(stack)-1][k] {
				return k, true
			}
			stack[len(stack)-1][k] = true
			afterKey = true
			continue
		}
		afterKey = false
	}
}

// fromJSON normalises an element's keys (trimmed, lower case) in place and
// checks value types: known fields take a string (or null for none), extra
// ones a string or a number. Keys are visited in sorted order so that the
// rejection does not depend on map order.
func (p *Parser) fromJSON(raw map[string]any) *Rejection {
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := raw[k]
		key := strings.ToLower(strings.TrimSpace(k))
		if key != k {
			if _, dup := raw[key]; dup {
				return &Rejection{Field: key, Error: "given twice (names are case-insensitive)"}
			}
			delete(raw, k)
			raw[key] = v
		}
		_, known := knownCols[key]
		if !known {
			// Checked here too so that a rejection never names a field
			// whose name is itself something not to repeat.
			if rej := checkExtraName(key); rej != nil {
				return rej
			}
		}
		switch v.(type) {
		case string, nil:
		case json.Number:
			if known {
				return &Rejection{Field: key, Error: "must be a string (in quotes)"}
			}
		default:
			if known {
				return &Rejection{Field: key, Error: "must be a string"}
			}
			return &Rejection{Field: key, Error: "must be a string or a number"}
		}
	}
	return nil
}

// fillJSON copies a checked element into r.
func fillJSON(r *notice.Recipient, raw map[string]any) {
	for k, v := range raw {
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case json.Number:
			s = x.String()
		default:
			continue
		}
		switch knownCols[k] {
		case colEmail:
			r.Email = s
		case colName:
			r.Name = s
		case colLocale:
			r.Locale = s
		case colCustomerID:
			r.CustomerID = s
		case colCardBrand:
			r.CardBrand = s
		case colCardLast4:
			r.CardLast4 = s
		default:
			if s == "" {
				continue
			}
			if r.Extra == nil {
				r.Extra = make(map[string]string)
			}
			r.Extra[k] = s
		}
	}
}

// jsonError describes a fatal JSON error with where it happened.
func (p *Parser) jsonError(where string, err error) error {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return &Error{Msg: fmt.Sprintf("%s: JSON syntax error at byte %d: %v", where, se.Offset, err), Err: err}
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return &Error{Msg: fmt.Sprintf("%s: the upload ends in the middle of the JSON (byte %d)", where, p.dec.InputOffset()), Err: io.ErrUnexpectedEOF}
	case errors.Is(err, errRecordTooLong):
		return &Error{Msg: fmt.Sprintf("%s: longer than %d bytes", where, maxRecordBytes), Err: err}
	}
	return fmt.Errorf("%s: %w", where, err)
}

var errRecordTooLong = errors.New("record too long")

// limitReader fails once more than maxRecordBytes were read since n was last
// reset, which the parser does before each record. Read-ahead buffering makes
// the bound approximate, which is all it needs to be.
type limitReader struct {
	r io.Reader
	n int
}

func (l *limitReader) Read(b []byte) (int, error) {
	if l.n > maxRecordBytes {
		return 0, errRecordTooLong
	}
	n, err := l.r.Read(b)
	l.n += n
	return n, err
}
