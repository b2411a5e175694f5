package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
)

func TestFormatFromContentType(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ct   string
		want Format
		ok   bool
	}{
		{"text/csv", CSV, true},
		{"text/csv; charset=utf-8", CSV, true},
		{"Text/CSV; header=present", CSV, true},
		{"application/csv", CSV, true},
		{"application/vnd.ms-excel", CSV, true},
		{"application/json", JSON, true},
		{"application/json; charset=UTF-8", JSON, true},
		{"", 0, false},
		{"text/plain", 0, false},
		{"application/x-www-form-urlencoded", 0, false},
		{"text/csv; charset", 0, false}, // malformed parameter
	}
	for _, tt := range tests {
		got, err := FormatFromContentType(tt.ct)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("FormatFromContentType(%q) = %v, %v; want %v ok=%v", tt.ct, got, err, tt.want, tt.ok)
		}
	}
}

func TestBlankRows(t *testing.T) {
	t.Parallel()
	// Excel writes emptied rows as commas; some editors leave spaces.
	body := header + "a@example.jp,Ann,en,C1,VISA,1111\n" + // 2
		",,,,,\n" + // 3
		"\n" + // 4
		"   \n" + // 5
		" , , ,,,\n" + // 6
		"b@example.jp,Bob,en,C2,VISA,2222\n" // 7
	rows, rejs := parseAll(t, body, CSV)
	if len(rejs) != 0 || len(rows) != 2 || rows[0].Line != 2 || rows[1].Line != 7 {
		t.Fatalf("rows %+v rejections %+v", rows, rejs)
	}
}

func TestMultilineLineNumbers(t *testing.T) {
	t.Parallel()
	// A quoted field may hold line breaks in an extra column's value only if
	// it is rejected; what matters here is that the lines after stay right.
	body := header +
		"a@example.jp,Ann,en,C1,VISA,1111\n" + // 2
		"b@example.jp,\"Bo\r\nb\",en,C2,VISA,2222\n" + // 3-4
		"\"c@example.jp\",\"Carol\",\"en\",\"C3\",\"VISA\",\"3333\"\n" + // 5
		"\"d@example.jp\n\n\",Dan,en,C4,VISA,4444\n" + // 6-8
		"e@example.jp,Eve,en,C5,VISA,5555\n" // 9
	rows, rejs := parseAll(t, body, CSV)
	var got []string
	for _, r := range rows {
		got = append(got, fmt.Sprint(r.Line))
	}
	for _, r := range rejs {
		got = append(got, fmt.Sprintf("%d:%s", r.Line, r.Field))
	}
	if want := "2 5 9 3:name 6:email"; strings.Join(got, " ") != want {
		t.Errorf("lines = %q, want %q", strings.Join(got, " "), want)
	}
}

func TestBadBytesAfterPeek(t *testing.T) {
	t.Parallel()
	// The charset is guessed from the first 64 KiB; a bad byte later costs
	// its row only.
	t.Run("utf-8", func(t *testing.T) {
		var b bytes.Buffer
		genCSV(&b, 3000)
		b.WriteString("late@example.jp,Ta\xffro,ja,C1,VISA,1234\n")
		b.WriteString("last@example.jp,Taro,ja,C1,VISA,1234\n")
		if b.Len() < 2*peekBytes {
			t.Fatal("test upload too small")
		}
		rows, rejs := parseAll(t, b.String(), CSV)
		if len(rows) != 3001 || len(rejs) != 1 || rejs[0].Line != 3002 || rejs[0].Field != "name" || !strings.Contains(rejs[0].Error, "UTF-8") {
			t.Fatalf("%d rows, rejections %+v", len(rows), rejs)
		}
	})
	t.Run("shift_jis", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("email,name\r\n")
		for i := 0; i < 3000; i++ {
			fmt.Fprintf(&b, "u%d@example.jp,山田 太郎\r\n", i)
		}
		body := shiftJIS(t, b.String())
		body = append(body, "late@example.jp,\xff\xff\r\nlast@example.jp,"...)
		body = append(body, shiftJIS(t, "佐藤\r\n")...)
		p, err := NewParser(bytes.NewReader(body), CSV)
		if err != nil || p.Charset() != "shift_jis" {
			t.Fatalf("NewParser: %v, charset %s", err, p.Charset())
		}
		rows, rejs := drain(t, p)
		if len(rows) != 3001 || rows[3000].Recipient.Name != "佐藤" || len(rejs) != 1 || rejs[0].Line != 3002 || !strings.Contains(rejs[0].Error, "U+FFFD") {
			t.Fatalf("%d rows, rejections %+v", len(rows), rejs)
		}
	})
}

func drain(t testing.TB, p *Parser) ([]Row, []Rejection) {
	t.Helper()
	var rows []Row
	var rejs []Rejection
	for {
		row, rej, err := p.Next()
		if errors.Is(err, io.EOF) {
			return rows, rejs
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if rej != nil {
			rejs = append(rejs, *rej)
		} else {
			rows = append(rows, row)
		}
	}
}

func TestOpenQuoteIsBounded(t *testing.T) {
	t.Parallel()
	// A quote left open would swallow the rest of the upload into one field;
	// past the record limit that is fatal, and the rows before it stand.
	var b bytes.Buffer
	b.WriteString(header + "a@example.jp,Ann,en,C1,VISA,1111\n")
	b.WriteString("b@example.jp,\"Bob,en,C2,VISA,2222\n")
	for b.Len() < 3*maxRecordBytes {
		b.WriteString("c@example.jp,Carol,en,C3,VISA,3333\n")
	}
	p, err := NewParser(&b, CSV)
	if err != nil {
		t.Fatal(err)
	}
	if row, rej, err := p.Next(); err != nil || rej != nil || row.Line != 2 {
		t.Fatalf("first row: %+v %+v %v", row, rej, err)
	}
	_, rej, err := p.Next()
	var ie *Error
	if rej != nil || !errors.As(err, &ie) || !strings.Contains(err.Error(), "quote") {
		t.Fatalf("second record: %+v, %v; want a fatal error about a quote", rej, err)
	}
	if _, _, err2 := p.Next(); err2 != err {
		t.Errorf("error not sticky: %v then %v", err, err2)
	}
	if b.Len() < maxRecordBytes {
		t.Errorf("read %d bytes of %d: not bounded by the record limit", 3*maxRecordBytes-b.Len(), 3*maxRecordBytes)
	}
}

type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(b []byte) (int, error) {
	n, err := f.r.Read(b)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func TestReadErrorIsWrapped(t *testing.T) {
	t.Parallel()
	errBoom := errors.New("connection reset")
	var b bytes.Buffer
	genCSV(&b, 5000)
	body := b.Bytes()[:b.Len()-10] // cut inside the last row
	p, err := NewParser(&failingReader{r: bytes.NewReader(body), err: errBoom}, CSV)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		_, rej, err := p.Next()
		if err != nil {
			if !errors.Is(err, errBoom) || !strings.Contains(err.Error(), "after line") {
				t.Fatalf("err = %v, want the reader's error with the line", err)
			}
			break
		}
		if rej != nil {
			t.Fatalf("rejection %+v", rej)
		}
		n++
	}
	if n != 4999 || p.Line() != 5000 {
		t.Errorf("%d rows, Line() = %d; want 4999 rows up to line 5000", n, p.Line())
	}
}

func TestJSONFatal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		rows       int    // good elements before the error
		msg        string // in the error
		eof        bool   // errors.Is(err, io.ErrUnexpectedEOF)
	}{
		{"syntax", `[{"email":"a@example.jp"},{"email" "b@example.jp"}]`, 1, "element 2: JSON syntax error at byte", false},
		{"cut off", `[{"email":"a@example.jp"},{"email":"b@exa`, 1, "ends in the middle", true},
		{"no closing bracket", `[{"email":"a@example.jp"}`, 1, "ends in the middle", true},
		{"data after", `[{"email":"a@example.jp"}] {"email":"b@example.jp"}`, 1, "after the closing ]", false},
		{"garbage after", `[{"email":"a@example.jp"}]x`, 1, "after the closing ]", false},
		{"trailing comma", `[{"email":"a@example.jp"},]`, 1, "syntax error", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewParser(strings.NewReader(tt.body), JSON)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for {
				_, rej, err := p.Next()
				if err == nil {
					if rej != nil {
						t.Fatalf("rejection %+v", rej)
					}
					n++
					continue
				}
				if errors.Is(err, io.EOF) || !strings.Contains(err.Error(), tt.msg) || errors.Is(err, io.ErrUnexpectedEOF) != tt.eof {
					t.Fatalf("err = %v, want %q (unexpected EOF: %v)", err, tt.msg, tt.eof)
				}
				break
			}
			if n != tt.rows {
				t.Errorf("%d rows before the error, want %d", n, tt.rows)
			}
		})
	}
}

func TestEOFIsSticky(t *testing.T) {
	t.Parallel()
	for _, f := range []Format{CSV, JSON} {
		body := header + "a@example.jp,,,,,\n"
		if f == JSON {
			body = `[{"email":"a@example.jp"}]`
		}
		p, err := NewParser(strings.NewReader(body), f)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := p.Next(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			if _, _, err := p.Next(); err != io.EOF {
				t.Fatalf("%v: call %d after the end: %v, want io.EOF", f, i, err)
			}
		}
	}
}

func TestHeaderNames(t *testing.T) {
	t.Parallel()
	for _, hdr := range []string{"email,\"me\nmo\"\n", "email," + strings.Repeat("x", 101) + "\n", "email,4111 1111 1111 1111\n"} {
		_, err := NewParser(strings.NewReader(hdr+"a@example.jp,x\n"), CSV)
		if err == nil {
			t.Errorf("header %q accepted", hdr)
		} else if strings.Contains(err.Error(), "1111") {
			t.Errorf("error %q repeats the header's card number", err)
		}
	}
	// 50 extra columns are fine, and reach Extra by their lower-case names.
	var cols, vals []string
	for i := 0; i < MaxExtraFields; i++ {
		cols = append(cols, fmt.Sprintf("X%d", i))
		vals = append(vals, fmt.Sprint(i))
	}
	rows, rejs := parseAll(t, "Email,"+strings.Join(cols, ",")+"\na@example.jp,"+strings.Join(vals, ",")+"\n", CSV)
	if len(rejs) != 0 || len(rows) != 1 || len(rows[0].Recipient.Extra) != MaxExtraFields || rows[0].Recipient.Extra["x49"] != "49" {
		t.Fatalf("rows %+v rejections %+v", rows, rejs)
	}
}

// genReader produces a CSV of n rows on the fly, so that nothing holds the
// whole upload but the parser, if it does.
type genReader struct {
	n, i int
	buf  []byte
}

func (g *genReader) Read(b []byte) (int, error) {
	for len(g.buf) < len(b) && g.i <= g.n {
		if g.i == 0 {
			g.buf = append(g.buf, header...)
		} else {
			g.buf = fmt.Appendf(g.buf, "customer%07d@example.jp,山田 太郎,ja,C%07d,VISA,%04d\n", g.i, g.i, g.i%10000)
		}
		g.i++
	}
	if len(g.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(b, g.buf)
	g.buf = g.buf[:copy(g.buf, g.buf[n:])]
	return n, nil
}

func TestFlatMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 300,000 rows")
	}
	const rows = 300_000 // about 20 MB
	p, err := NewParser(&genReader{n: rows}, CSV)
	if err != nil {
		t.Fatal(err)
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak uint64
	n := 0
	for {
		_, rej, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil || rej != nil {
			t.Fatal(err, rej)
		}
		if n++; n%50_000 == 0 {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
	}
	if n != rows {
		t.Fatalf("%d rows, want %d", n, rows)
	}
	if grow := int64(peak) - int64(base); grow > 4<<20 {
		t.Errorf("live heap grew by %d bytes while streaming; want flat", grow)
	}
}
