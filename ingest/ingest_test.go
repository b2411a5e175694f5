package ingest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/transform"
)

const header = "email,name,locale,customer_id,card_brand,card_last4\n"

// parseAll reads a whole upload and returns its rows and rejections.
func parseAll(t testing.TB, body string, f Format) ([]Row, []Rejection) {
	t.Helper()
	p, err := NewParser(strings.NewReader(body), f)
	if err != nil {
		t.Fatalf("NewParser: %v", err)
	}
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

// Card numbers that pass the Luhn check (test numbers of the brands).
const (
	visa16 = "4111111111111111"
	amex15 = "378282246310005"
	jcb16  = "3530111333300000"
)

func TestRejections(t *testing.T) {
	t.Parallel()
	cardMsg := "looks like a full card number"
	tests := []struct {
		name  string
		hdr   string // CSV header; "" = the standard one
		row   string
		field string
		msg   string // substring of the reason
	}{
		{"empty email", "", ",Taro,ja,C1,VISA,1234", "email", "required"},
		{"no at", "", "taro.example.jp,Taro,ja,C1,VISA,1234", "email", "address"},
		{"display name with quoted address", "", `"""a@b.c"" <evil@x.y>",Taro,ja,C1,VISA,1234`, "email", "bare address"},
		{"angle brackets", "", "<evil@x.y>,Taro,ja,C1,VISA,1234", "email", "bare address"},
		{"name and address", "", "Taro <taro@example.jp>,Taro,ja,C1,VISA,1234", "email", "bare address"},
		{"comment", "", "taro@example.jp(evil@x.y),Taro,ja,C1,VISA,1234", "email", "bare address"},
		{"two addresses", "", `"a@example.jp,b@example.jp",Taro,ja,C1,VISA,1234`, "email", "bare address"},
		{"domain without dot", "", "taro@localhost,Taro,ja,C1,VISA,1234", "email", "dot"},
		{"double at", "", "a@b@example.jp,Taro,ja,C1,VISA,1234", "email", "address"},
		{"too long", "", strings.Repeat("a", 250) + "@example.jp,Taro,ja,C1,VISA,1234", "email", "longer"},
		{"LF in name", "", "taro@example.jp,\"Ta\nro\",ja,C1,VISA,1234", "name", "control"},
		{"CR in name", "", "taro@example.jp,\"Ta\rro\",ja,C1,VISA,1234", "name", "control"},
		{"LF after Japanese", "", "taro@example.jp,\"山田\n太郎\",ja,C1,VISA,1234", "name", "control"},
		{"CRLF in email", "", "\"taro@example.jp\r\nBcc: x@y.z\",Taro,ja,C1,VISA,1234", "email", "control"},
		{"tab in customer_id", "", "taro@example.jp,Taro,ja,\"C\t1\",VISA,1234", "customer_id", "control"},
		{"NUL in brand", "", "taro@example.jp,Taro,ja,C1,VI\x00SA,1234", "card_brand", "control"},
		{"C1 control", "", "taro@example.jp,Ta\u0085ro,ja,C1,VISA,1234", "name", "control"},
		{"line separator", "", "taro@example.jp,Ta\u2028ro,ja,C1,VISA,1234", "name", "control"},
		{"bidi override", "", "taro@example.jp,\u202eoraT,ja,C1,VISA,1234", "name", "control"},
		{"control in extra", "email,plan\n", "taro@example.jp,\"gold\nsilver\"", "plan", "control"},
		{"unknown locale", "", "taro@example.jp,Taro,jp,C1,VISA,1234", "locale", "ja or en"},
		{"locale fr", "", "taro@example.jp,Taro,fr,C1,VISA,1234", "locale", "ja or en"},
		{"last4 three digits", "", "taro@example.jp,Taro,ja,C1,VISA,123", "card_last4", "4 digits"},
		{"last4 five digits", "", "taro@example.jp,Taro,ja,C1,VISA,12345", "card_last4", "4 digits"},
		{"last4 letters", "", "taro@example.jp,Taro,ja,C1,VISA,12a4", "card_last4", "4 digits"},
		{"last4 full width", "", "taro@example.jp,Taro,ja,C1,VISA,１２３４", "card_last4", "4 digits"},
		{"card in last4", "", "taro@example.jp,Taro,ja,C1,VISA," + visa16, "card_last4", cardMsg},
		{"card in customer_id", "", "taro@example.jp,Taro,ja," + visa16 + ",VISA,1111", "customer_id", cardMsg},
		{"card with spaces", "", "taro@example.jp,Taro,ja,4111 1111 1111 1111,VISA,1111", "customer_id", cardMsg},
		{"card with dashes", "", "taro@example.jp,Taro,ja,4111-1111-1111-1111,VISA,1111", "customer_id", cardMsg},
		{"amex 4-6-5", "", "taro@example.jp,Taro,ja,C1,3782 822463 10005,1111", "card_brand", cardMsg},
		{"card inside name", "", "taro@example.jp,Taro " + jcb16 + ",ja,C1,JCB,0000", "name", cardMsg},
		{"card in extra column", "email,memo\n", "taro@example.jp,card " + amex15 + " leaked", "memo", cardMsg},
		{"card in extra with dashes", "email,memo\n", "taro@example.jp,4111-1111-1111-1111", "memo", cardMsg},
		{"full-width card", "email,memo\n", "taro@example.jp,４１１１－１１１１－１１１１－１１１１", "memo", cardMsg},
		{"card as email local part", "", visa16 + "@example.jp,Taro,ja,C1,VISA,1111", "email", cardMsg},
		{"long name", "", "taro@example.jp," + strings.Repeat("名", 201) + ",ja,C1,VISA,1234", "name", "longer"},
		{"too many fields", "", "taro@example.jp,Taro,ja,C1,VISA,1234,extra", "", "7 fields, the header has 6"},
		{"too few fields", "", "taro@example.jp,Taro", "", "2 fields, the header has 6"},
		{"bare quote", "", `taro@example.jp,Ta"ro,ja,C1,VISA,1234`, "", "quot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := tt.hdr
			if hdr == "" {
				hdr = header
			}
			// A good row after the bad one proves the rejection is not fatal.
			body := hdr + tt.row + "\n" + strings.Repeat(",", strings.Count(hdr, ","))
			body = hdr + tt.row + "\n" + goodRow(hdr)
			rows, rejs := parseAll(t, body, CSV)
			if len(rejs) != 1 {
				t.Fatalf("rejections = %+v, want 1", rejs)
			}
			rej := rejs[0]
			if rej.Line != 2 || rej.Field != tt.field || !strings.Contains(rej.Error, tt.msg) {
				t.Errorf("rejection = %+v, want line 2, field %q, reason with %q", rej, tt.field, tt.msg)
			}
			for _, d := range []string{visa16, amex15, jcb16, "4111 1111", "4111-1111", "１１１１"} {
				if strings.Contains(rej.Error, d) {
					t.Errorf("rejection %q echoes the card number", rej.Error)
				}
			}
			if len(rows) != 1 || rows[0].Line != 3+strings.Count(tt.row, "\n") {
				t.Errorf("good row after the bad one: %+v", rows)
			}
		})
	}
}

// goodRow is a valid record for a header.
func goodRow(hdr string) string {
	cols := strings.Split(strings.TrimSpace(hdr), ",")
	vals := make([]string, len(cols))
	for i, c := range cols {
		switch c {
		case "email":
			vals[i] = "good@example.jp"
		case "locale":
			vals[i] = "en"
		case "card_last4":
			vals[i] = "4321"
		default:
			vals[i] = "ok"
		}
	}
	return strings.Join(vals, ",") + "\n"
}

func TestAccepted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		hdr  string
		row  string
		want func(r Row) string // "" when the row is right
	}{
		{"plain", header, "Taro@Example.JP,山田 太郎,JA,C0001,VISA,0123", func(r Row) string {
			x := r.Recipient
			if x.Email != "Taro@example.jp" || x.Name != "山田 太郎" || x.Locale != "ja" || x.CardLast4 != "0123" || x.CustomerID != "C0001" {
				return fmt.Sprintf("%+v", x)
			}
			return ""
		}},
		{"spaces trimmed", header, "  taro@example.jp  , Taro ,en,C1,VISA, 0123 ", func(r Row) string {
			if r.Recipient.Email != "taro@example.jp" || r.Recipient.Name != "Taro" || r.Recipient.CardLast4 != "0123" {
				return fmt.Sprintf("%+v", r.Recipient)
			}
			return ""
		}},
		{"empty locale", header, "taro@example.jp,Taro,,C1,VISA,1234", nil},
		{"no last4", header, "taro@example.jp,Taro,en,C1,VISA,", nil},
		{"plus address", header, "taro+notice@example.co.jp,Taro,en,C1,VISA,1234", nil},
		{"phone with dashes", "email,phone\n", "taro@example.jp,090-1234-5678", func(r Row) string {
			if r.Recipient.Extra["phone"] != "090-1234-5678" {
				return fmt.Sprintf("%+v", r.Recipient.Extra)
			}
			return ""
		}},
		{"international phone", "email,phone\n", "taro@example.jp,+81 3 1234 5678", nil},
		{"non-Luhn 16-digit id", header, "taro@example.jp,Taro,en,4111111111111112,VISA,1234", func(r Row) string {
			if r.Recipient.CustomerID != "4111111111111112" {
				return r.Recipient.CustomerID
			}
			return ""
		}},
		{"20-digit id", header, "taro@example.jp,Taro,en,41111111111111110000,VISA,1234", nil},
		{"12 digits passing Luhn", header, "taro@example.jp,Taro,en,411111111116,VISA,1234", nil},
		{"date and phone", "email,memo\n", "taro@example.jp,2019-05-28 03-1234-5678", nil},
		{"extra columns kept", "email,plan,memo\n", "taro@example.jp,gold,", func(r Row) string {
			if len(r.Recipient.Extra) != 1 || r.Recipient.Extra["plan"] != "gold" {
				return fmt.Sprintf("%+v", r.Recipient.Extra)
			}
			return ""
		}},
		{"header case and spaces", " Email , NAME \n", "taro@example.jp,Taro", func(r Row) string {
			if r.Recipient.Email != "taro@example.jp" || r.Recipient.Name != "Taro" {
				return fmt.Sprintf("%+v", r.Recipient)
			}
			return ""
		}},
		{"script name kept for escaping later", header, "taro@example.jp,<script>alert(1)</script>,en,C1,VISA,1234", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, rejs := parseAll(t, tt.hdr+tt.row+"\n", CSV)
			if len(rejs) != 0 || len(rows) != 1 {
				t.Fatalf("rows %+v, rejections %+v; want one row", rows, rejs)
			}
			if rows[0].Line != 2 {
				t.Errorf("line = %d, want 2", rows[0].Line)
			}
			if tt.want != nil {
				if msg := tt.want(rows[0]); msg != "" {
					t.Errorf("row: %s", msg)
				}
			}
		})
	}
}

func TestBOM(t *testing.T) {
	t.Parallel()
	rows, rejs := parseAll(t, "\xef\xbb\xbf"+header+"taro@example.jp,Taro,en,C1,VISA,1234\n", CSV)
	if len(rejs) != 0 || len(rows) != 1 || rows[0].Recipient.Email != "taro@example.jp" {
		t.Fatalf("rows %+v rejections %+v", rows, rejs)
	}
	// BOM and CRLF line ends, as Excel writes "CSV UTF-8".
	rows, rejs = parseAll(t, "\xef\xbb\xbfemail,name\r\ntaro@example.jp,山田\r\nhanako@example.jp,花子\r\n", CSV)
	if len(rejs) != 0 || len(rows) != 2 || rows[1].Recipient.Name != "花子" || rows[1].Line != 3 {
		t.Fatalf("rows %+v rejections %+v", rows, rejs)
	}
}

func shiftJIS(t testing.TB, s string) []byte {
	t.Helper()
	b, _, err := transform.Bytes(japanese.ShiftJIS.NewEncoder(), []byte(s))
	if err != nil {
		t.Fatalf("encode Shift_JIS: %v", err)
	}
	return b
}

func TestShiftJIS(t *testing.T) {
	t.Parallel()
	// ソ and 表 have 0x5C ('\\') as their second byte in Shift_JIS; ① is a
	// CP932 (NEC) extension that Excel writes.
	names := []string{"山田 太郎", "佐藤 花子", "高橋 ソフト", "渡辺 表示", "①番"}
	var b strings.Builder
	b.WriteString("email,name,locale,memo\r\n")
	for i, n := range names {
		fmt.Fprintf(&b, "user%d@example.jp,%s,ja,お客様メモ%d\r\n", i, n, i)
	}
	// Enough rows that the peek sees only part of the file.
	for i := len(names); i < 3000; i++ {
		fmt.Fprintf(&b, "user%d@example.jp,鈴木 一郎,ja,メモ\r\n", i)
	}
	body := shiftJIS(t, b.String())
	p, err := NewParser(bytes.NewReader(body), CSV)
	if err != nil {
		t.Fatal(err)
	}
	if p.Charset() != "shift_jis" {
		t.Errorf("charset = %q", p.Charset())
	}
	n := 0
	for {
		row, rej, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil || rej != nil {
			t.Fatalf("row %d: %v %+v", n, err, rej)
		}
		want := "鈴木 一郎"
		if n < len(names) {
			want = names[n]
		}
		if row.Recipient.Name != want || row.Line != n+2 {
			t.Fatalf("row %d: name %q line %d, want %q line %d", n, row.Recipient.Name, row.Line, want, n+2)
		}
		n++
	}
	if n != 3000 {
		t.Errorf("%d rows, want 3000", n)
	}
}

func TestNotUTF8NorShiftJIS(t *testing.T) {
	t.Parallel()
	body := header + "taro@example.jp,\x80\x80\xff\xfe,ja,C1,VISA,1234\n"
	_, err := NewParser(strings.NewReader(body), CSV)
	var ie *Error
	if !errors.As(err, &ie) || !strings.Contains(ie.Msg, "UTF-8") {
		t.Fatalf("err = %v, want a clear encoding error", err)
	}
	if _, err := NewParser(strings.NewReader("[{\"email\":\"\x82\xa0@example.jp\"}]"), JSON); err == nil {
		t.Fatal("Shift_JIS JSON accepted")
	}
}

func TestQuotedNewlinesAndLines(t *testing.T) {
	t.Parallel()
	body := header +
		"a@example.jp,\"Smith, John\",en,C1,VISA,1111\n" + // line 2
		"b@example.jp,\"multi\nline\",en,C2,VISA,2222\n" + // lines 3-4, rejected (LF in name)
		"\n" + // line 5, blank
		"c@example.jp,Carol,en,\"C\"\"3\",VISA,3333\n" + // line 6
		"d@example.jp,Dan,en\n" + // line 7, wrong count
		"e@example.jp,Eve,en,C5,VISA,5555" // line 8, no final newline
	rows, rejs := parseAll(t, body, CSV)
	var gotRows []string
	for _, r := range rows {
		gotRows = append(gotRows, fmt.Sprintf("%d:%s", r.Line, r.Recipient.Email))
	}
	if want := "2:a@example.jp 6:c@example.jp 8:e@example.jp"; strings.Join(gotRows, " ") != want {
		t.Errorf("rows = %v, want %s", gotRows, want)
	}
	if rows[0].Recipient.Name != "Smith, John" || rows[1].Recipient.CustomerID != `C"3` {
		t.Errorf("quoted fields: %+v %+v", rows[0].Recipient, rows[1].Recipient)
	}
	if len(rejs) != 2 || rejs[0].Line != 3 || rejs[0].Field != "name" || rejs[1].Line != 7 {
		t.Errorf("rejections = %+v", rejs)
	}
}

func TestFatal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body, msg string
		f               Format
	}{
		{"empty", "", "empty", CSV},
		{"no email column", "name,locale\nTaro,ja\n", "no email column", CSV},
		{"blank column name", "email,,name\n", "no name", CSV},
		{"duplicate column", "email,name,Name\n", "twice", CSV},
		{"too many extra columns", "email" + strings.Repeat(",x", 0) + func() string {
			var b strings.Builder
			for i := 0; i < 51; i++ {
				fmt.Fprintf(&b, ",x%d", i)
			}
			return b.String()
		}() + "\n", "extra columns", CSV},
		{"utf-16", "\xff\xfee\x00m\x00a\x00i\x00l\x00\n\x00", "UTF-16", CSV},
		{"json not array", `{"email":"a@example.jp"}`, "array", JSON},
		{"json empty", ``, "JSON", JSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewParser(strings.NewReader(tt.body), tt.f)
			var ie *Error
			if !errors.As(err, &ie) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want *Error with %q", err, tt.msg)
			}
		})
	}
}

func TestTruncated(t *testing.T) {
	t.Parallel()
	// An upload cut inside a quoted field: the rows before it count, and the
	// parser ends (rejection, then EOF) instead of hanging or panicking.
	body := header + "a@example.jp,Ann,en,C1,VISA,1111\n" + "b@example.jp,\"Bo"
	rows, rejs := parseAll(t, body, CSV)
	if len(rows) != 1 || len(rejs) != 1 || rejs[0].Line != 3 {
		t.Fatalf("rows %+v rejections %+v", rows, rejs)
	}
}

func TestJSON(t *testing.T) {
	t.Parallel()
	body := `[
 {"email":"a@example.jp","name":"山田 太郎","locale":"ja","customer_id":"12345","card_last4":"0001","plan":"gold","points":1200,"memo":null},
 {"email":"\"a@b.c\" <evil@x.y>"},
 {"email":"c@example.jp","customer_id":"` + visa16 + `"},
 {"email":"d@example.jp","name":["x"]},
 42,
 {"email":"e@example.jp","locale":"en","memo":null,"Name":"Eve\nBcc"},
 {"email":"f@example.jp","card_last4":"12"},
 {"email":"g@example.jp","locale":"zh"},
 {"email":"h@example.jp","customer_id":12345},
 {"email":"i@example.jp","points":true},
 {"email":"j@example.jp","memo":"` + visa16 + `"},
 null,
 {"email":"k@example.jp","Name":"Kei","name":"Kei"},
 {"email":"l@example.jp","4111111111111111":{"x":1}}
]`
	rows, rejs := parseAll(t, body, JSON)
	if len(rows) != 1 || rows[0].Line != 1 {
		t.Fatalf("rows = %+v", rows)
	}
	r := rows[0].Recipient
	if r.Name != "山田 太郎" || r.CustomerID != "12345" || r.Extra["plan"] != "gold" || r.Extra["points"] != "1200" || len(r.Extra) != 2 || r.Locale != "ja" {
		t.Errorf("row = %+v", r)
	}
	want := []struct {
		line  int
		field string
	}{{2, "email"}, {3, "customer_id"}, {4, "name"}, {5, ""}, {6, "name"}, {7, "card_last4"}, {8, "locale"},
		{9, "customer_id"}, {10, "points"}, {11, "memo"}, {12, ""}, {13, "name"}, {14, ""}}
	if len(rejs) != len(want) {
		t.Fatalf("rejections = %+v", rejs)
	}
	for i, w := range want {
		if rejs[i].Line != w.line || rejs[i].Field != w.field {
			t.Errorf("rejection %d = %+v, want line %d field %q", i, rejs[i], w.line, w.field)
		}
		if strings.Contains(rejs[i].Error, visa16) {
			t.Errorf("rejection echoes the card number: %q", rejs[i].Error)
		}
	}
	// Truncated JSON: rows before stay, then an error.
	p, err := NewParser(strings.NewReader(`[{"email":"a@example.jp"},{"email":"b@exa`), JSON)
	if err != nil {
		t.Fatal(err)
	}
	if _, rej, err := p.Next(); err != nil || rej != nil {
		t.Fatalf("first element: %v %v", rej, err)
	}
	if _, _, err := p.Next(); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("truncated JSON: err = %v", err)
	}
}

func TestRejectionJSONHasNoDigits(t *testing.T) {
	t.Parallel()
	_, rejs := parseAll(t, "email,a,b\nx@example.jp,"+visa16+",4111-1111-1111-1111\n", CSV)
	b, _ := json.Marshal(rejs)
	if len(rejs) != 1 || bytes.Contains(b, []byte("1111")) {
		t.Fatalf("rejections %s", b)
	}
}

func FuzzParseCSV(f *testing.F) {
	f.Add([]byte(header + "a@example.jp,Ann,en,C1,VISA,1111\n"))
	f.Add([]byte("\xef\xbb\xbf" + header + "\"a\n\"\"b\",x\n"))
	f.Add(shiftJIS(f, "email,name\n山田@example.jp,山田\n"))
	f.Add([]byte("email\n\"unterminated"))
	f.Add([]byte("email,memo\nx@example.jp,４１１１－１１１１－１１１１－１１１１\n"))
	f.Add([]byte(`[{"email":"a@example.jp","x":1},null,[],{"EMAIL":"b@example.jp","email":""}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, fm := range []Format{CSV, JSON} {
			p, err := NewParser(bytes.NewReader(b), fm)
			if err != nil {
				continue
			}
			last := 0
			for i := 0; i < 10000; i++ {
				row, rej, err := p.Next()
				if err != nil {
					break
				}
				line := row.Line
				if rej != nil {
					line = rej.Line
					if LooksLikeCardNumber(rej.Field) || LooksLikeCardNumber(rej.Error) {
						t.Fatalf("rejection repeats a card number: %+v", rej)
					}
				} else if verr := Validate(&row.Recipient); verr != nil {
					t.Fatalf("accepted row fails Validate: %+v", verr)
				}
				if fm == CSV && line < last {
					t.Fatalf("line went back from %d to %d", last, line)
				}
				last = line
			}
		}
	})
}

// genCSV writes a header and n generated rows.
func genCSV(w io.Writer, n int) {
	bw := bufio.NewWriter(w)
	bw.WriteString(header)
	for i := 0; i < n; i++ {
		fmt.Fprintf(bw, "customer%07d@example.jp,山田 太郎,ja,C%07d,VISA,%04d\n", i, i, i%10000)
	}
	bw.Flush()
}

func BenchmarkParseCSV(b *testing.B) {
	const rows = 100_000
	var buf bytes.Buffer
	genCSV(&buf, rows)
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	for b.Loop() {
		p, err := NewParser(bytes.NewReader(buf.Bytes()), CSV)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			_, rej, err := p.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil || rej != nil {
				b.Fatal(err, rej)
			}
			n++
		}
		if n != rows {
			b.Fatalf("%d rows, want %d", n, rows)
		}
	}
	b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
}
