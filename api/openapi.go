package api

import (
	_ "embed"
	"net/http"
)

// openAPI is the API's contract (OpenAPI 3.1). The API tests check every
// request they make and every answer they get against it, and that it
// names every route the server has and no other: it cannot drift from the
// code.
//
//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the API's OpenAPI 3.1 document (JSON).
func OpenAPI() []byte { return openAPI }

// serveOpenAPI answers GET /v1/openapi.json. It is public, like the
// contract of any API: it names no data, only the shapes.
func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Write(openAPI)
}
