package api_test

// The API's contract (api/openapi.json) is held to the code here, for every
// test of this package at once: TestMain puts a checking transport under
// http.DefaultTransport, through which every test's requests to the API go
// (http.Get, http.DefaultClient, clients without a transport of their own,
// internal/apiclient). Each request to /v1/…, /healthz or /readyz and its
// answer are validated against the document with libopenapi-validator:
//
//   - an answer must match the operation's declared answer for its status
//     (status declared, headers, body schema), and a 201 must say Location;
//   - a request the document forbids must be refused with a 4xx: a server
//     that takes what the contract says it refuses has drifted from it;
//   - a path or method the document lacks must be a JSON 404 or 405.
//
// A mismatch fails the request (the client gets an error saying what did
// not match) and the package's run (listed at the end), so no test can
// swallow it.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	verrors "github.com/pb33f/libopenapi-validator/errors"

	"github.com/oshirase/oshirase/api"
	"github.com/oshirase/oshirase/internal/testenv"
	"github.com/oshirase/oshirase/internal/teststack"
	"github.com/oshirase/oshirase/service"
)

// contract is the checker every test's requests go through.
var contract *contractCheck

func TestMain(m *testing.M) {
	c, err := newContractCheck(api.OpenAPI(), http.DefaultTransport)
	if err != nil {
		fmt.Fprintln(os.Stderr, "api/openapi.json:", err)
		os.Exit(2)
	}
	contract = c
	http.DefaultTransport = c
	code := m.Run()
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "api/openapi.json: %d requests and answers checked\n", contract.checked)
	}
	if bad := c.mismatches(); len(bad) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d requests or answers do not match api/openapi.json:\n", len(bad))
		for _, b := range bad {
			fmt.Fprintln(os.Stderr, "  -", b)
		}
		code = 1
	}
	os.Exit(code)
}

// maxChecked is the largest request body checked against its schema; a
// larger one (a big upload) has its parameters checked only.
const maxChecked = 1 << 20

type contractCheck struct {
	base   http.RoundTripper
	full   validator.Validator // requests with their bodies, and answers
	noBody validator.Validator // requests whose body cannot be read twice

	mu      sync.Mutex // the validators' caches are not documented safe for concurrent use
	bad     []string
	checked int
}

func newContractCheck(doc []byte, base http.RoundTripper) (*contractCheck, error) {
	build := func(opts ...config.Option) (validator.Validator, error) {
		d, err := libopenapi.NewDocument(doc)
		if err != nil {
			return nil, err
		}
		v, errs := validator.NewValidator(d, opts...)
		if len(errs) > 0 {
			return nil, fmt.Errorf("%v", errs)
		}
		return v, nil
	}
	full, err := build(config.WithFormatAssertions())
	if err != nil {
		return nil, err
	}
	if ok, errs := full.ValidateDocument(); !ok {
		return nil, fmt.Errorf("not a valid OpenAPI 3.1 document: %s", describe(errs))
	}
	noBody, err := build(config.WithFormatAssertions(), config.WithoutRequestBodyValidation())
	if err != nil {
		return nil, err
	}
	return &contractCheck{base: base, full: full, noBody: noBody}, nil
}

// inContract reports whether the document speaks for a path.
func inContract(path string) bool {
	return strings.HasPrefix(path, "/v1/") || path == "/healthz" || path == "/readyz"
}

func (c *contractCheck) RoundTrip(req *http.Request) (*http.Response, error) {
	if !inContract(req.URL.Path) {
		return c.base.RoundTrip(req)
	}
	// The request as sent, with a body of its own to validate.
	vreq := req.Clone(req.Context())
	v := c.full
	switch {
	case req.Body == nil || req.Body == http.NoBody:
		vreq.Body = http.NoBody
	case req.GetBody != nil && req.ContentLength >= 0 && req.ContentLength <= maxChecked && req.Header.Get("Content-Encoding") == "":
		b, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(b)
		if err != nil {
			return nil, err
		}
		vreq.Body = io.NopCloser(bytes.NewReader(body))
		if len(body) == 0 {
			vreq.Body = http.NoBody // no body, whatever the label says
			vreq.Header.Del("Content-Type")
		}
	default:
		vreq.Body, v = http.NoBody, c.noBody
	}
	if vreq.Body != http.NoBody && vreq.Header.Get("Content-Type") == "" {
		// The server reads a JSON body whatever its label (curl -d sends
		// one as a form): the contract's JSON is what it reads.
		vreq.Header.Set("Content-Type", "application/json")
	}
	c.mu.Lock()
	reqOK, reqErrs := v.ValidateHttpRequestSync(vreq)
	c.mu.Unlock()
	unknown := false
	for _, e := range reqErrs {
		unknown = unknown || e.IsPathMissingError() || e.IsOperationMissingError()
	}

	resp, err := c.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	what := fmt.Sprintf("%s %s → %d", req.Method, req.URL.Path, resp.StatusCode)
	fail := func(msg string) (*http.Response, error) {
		resp.Body.Close()
		m := what + ": " + msg
		c.mu.Lock()
		c.bad = append(c.bad, m)
		c.mu.Unlock()
		return nil, fmt.Errorf("openapi contract: %s", m)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	var body []byte
	if mt == "application/json" {
		if body, err = io.ReadAll(resp.Body); err != nil {
			return fail("reading the answer: " + err.Error())
		}
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
	}
	if unknown {
		// No such route in the contract: the server must say so too.
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if (resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed && resp.StatusCode != http.StatusUnauthorized) ||
			json.Unmarshal(body, &e) != nil || e.Error.Code == "" || e.Error.Message == "" {
			return fail("the contract has no such operation, yet the server answered it (add it to api/openapi.json)")
		}
		c.count()
		return resp, nil
	}
	if !reqOK && (resp.StatusCode < 400 || resp.StatusCode > 499) {
		return fail("the contract forbids this request, yet the server took it: " + describe(reqErrs))
	}
	if resp.StatusCode == http.StatusCreated && resp.Header.Get("Location") == "" {
		return fail("201 without Location")
	}
	// The answer as received; a streamed CSV is checked by its status and
	// headers (its body is read by the test).
	vresp := *resp
	vresp.Body = io.NopCloser(bytes.NewReader(body))
	c.mu.Lock()
	ok, errs := c.full.ValidateHttpResponse(vreq, &vresp)
	c.mu.Unlock()
	if !ok {
		return fail("the answer does not match the contract: " + describe(errs) + " body: " + clip(body))
	}
	c.count()
	return resp, nil
}

func (c *contractCheck) count() {
	c.mu.Lock()
	c.checked++
	c.mu.Unlock()
}

func (c *contractCheck) mismatches() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.bad...)
}

// describe is the validator's errors in a line each, with the schema's
// reasons.
func describe(errs []*verrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "[%s: %s", e.Message, e.Reason)
		for _, s := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "; %s at %s", s.Reason, s.FieldPath)
		}
		b.WriteString("] ")
	}
	return strings.TrimSpace(b.String())
}

func clip(b []byte) string {
	if len(b) > 600 {
		return string(b[:600]) + "…"
	}
	return string(b)
}

// TestContractRoutes holds the document and the server's routes to each
// other: every route of the whole service under /v1 (and the health
// checks) is in the document with its method, and every operation of the
// document is a route. A route added without its contract fails here.
func TestContractRoutes(t *testing.T) {
	_, url := testenv.Redis(t, testenv.DBAPI)
	st := teststack.StartStack(t, testenv.Config(t, map[string]string{"REDIS_URL": url, "KEY_PREFIX": "contract"}), service.Options{API: true})
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	inDoc := map[string]bool{}
	for p, ops := range doc.Paths {
		for m := range ops {
			switch m {
			case "get", "put", "post", "delete", "patch", "head", "options", "trace":
				inDoc[strings.ToUpper(m)+" "+p] = true
			}
		}
	}
	routes := map[string]bool{}
	for _, pattern := range st.Svc.API.Routes() {
		method, path, ok := strings.Cut(pattern, " ")
		if !ok {
			method, path = "", pattern
		}
		if !inContract(path) || pattern == "/v1/" { // "/v1/": the JSON 404/405 for the rest
			continue
		}
		if method == "" {
			t.Errorf("route %q has no method: the contract describes operations (mount it as \"GET %s\", …)", pattern, path)
			continue
		}
		routes[pattern] = true
		if !inDoc[pattern] {
			t.Errorf("route %s is not in api/openapi.json", pattern)
		}
	}
	for op := range inDoc {
		if !routes[op] {
			t.Errorf("api/openapi.json has %s, which no route serves", op)
		}
	}
	if len(routes) < 30 {
		t.Errorf("only %d routes found: is Routes() missing some?", len(routes))
	}
}

// TestOpenAPIServed: the document is served at /v1/openapi.json without a
// key, as JSON, byte for byte the one the tests check against.
func TestOpenAPIServed(t *testing.T) {
	hs := rolesServer(t)
	resp, err := http.Get(hs.URL + "/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || !bytes.Equal(b, api.OpenAPI()) {
		t.Fatalf("GET /v1/openapi.json: %d %s, %d bytes (want %d)", resp.StatusCode, resp.Header.Get("Content-Type"), len(b), len(api.OpenAPI()))
	}
	var doc struct {
		OpenAPI string `json:"openapi"`
	}
	if json.Unmarshal(b, &doc); doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi = %q, want 3.1.0", doc.OpenAPI)
	}
}

// TestContractCatchesDrift shows the check can fail: a server whose
// answers or routes stray from the document is caught.
func TestContractCatchesDrift(t *testing.T) {
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/campaigns": // next_cursor missing, campaigns not a list
			w.Write([]byte(`{"campaigns": 1}`))
		case "/v1/suppressions": // a 201 without Location
			w.WriteHeader(201)
			w.Write([]byte(`{"email":"a@example.com","reason":"x","at":"2026-12-01T00:00:00Z"}`))
		default: // a route the document lacks, answered
			w.Write([]byte(`{}`))
		}
	}))
	defer fake.Close()
	c, err := newContractCheck(api.OpenAPI(), contract.base)
	if err != nil {
		t.Fatal(err)
	}
	cl := &http.Client{Transport: c}
	for _, tc := range []struct{ method, path, body, want string }{
		{"GET", "/v1/campaigns", "", "does not match"},
		{"POST", "/v1/suppressions", `{"email":"a@example.com","reason":"x"}`, "201 without Location"},
		{"GET", "/v1/not-in-the-contract", "", "no such operation"},
		{"GET", "/v1/campaigns?limit=0", "", "forbids this request"},
	} {
		req, _ := http.NewRequest(tc.method, fake.URL+tc.path, strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer "+testenv.AdminKey)
		req.Header.Set("Content-Type", "application/json")
		_, err := cl.Do(req)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s: err %v, want one saying %q", tc.method, tc.path, err, tc.want)
		}
	}
	if n := len(c.mismatches()); n != 4 {
		t.Errorf("%d mismatches recorded, want 4", n)
	}
}
