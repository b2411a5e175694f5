package api

import (
	"net/http"

	"github.com/oshirase/oshirase/app"
)

// createAccount answers POST /v1/accounts {"name","role"}: 201 with the
// account and its key, shown this once. It takes no Idempotency-Key: the
// kept answer would hold the key; a retry of a create that went through is
// a 409 (the name is taken), and rotating gives a new key.
func (s *Server) createAccount(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
		Role string `json:"role"`
	}
	if !decodeJSON(w, r, &req) {
		return
	}
	v, err := s.app.CreateAccount(r.Context(), req.Name, req.Role)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/accounts/"+v.Name)
	writeJSON(w, http.StatusCreated, v)
}

func (s *Server) listAccounts(w http.ResponseWriter, r *http.Request) {
	vs, err := s.app.Accounts(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"accounts": vs})
}

func (s *Server) getAccount(w http.ResponseWriter, r *http.Request) {
	v, err := s.app.Account(r.Context(), r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// patchAccount answers PATCH /v1/accounts/{name} {"role"?, "disabled"?}.
func (s *Server) patchAccount(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Role     *string `json:"role"`
		Disabled *bool   `json:"disabled"`
	}
	if !decodeJSON(w, r, &req) {
		return
	}
	var ups []app.AccountUpdate
	if req.Role != nil {
		ups = append(ups, app.AccountUpdate{Op: "role", Role: *req.Role})
	}
	if req.Disabled != nil {
		op := "enable"
		if *req.Disabled {
			op = "disable"
		}
		ups = append(ups, app.AccountUpdate{Op: op})
	}
	if len(ups) == 0 {
		s.fail(w, r, app.E(app.Invalid, "nothing_to_change", "give role or disabled"))
		return
	}
	var v *app.AccountView
	for _, u := range ups {
		var err error
		if v, err = s.app.UpdateAccount(r.Context(), r.PathValue("name"), u); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) rotateAccount(w http.ResponseWriter, r *http.Request) {
	v, err := s.app.UpdateAccount(r.Context(), r.PathValue("name"), app.AccountUpdate{Op: "rotate"})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) deleteAccount(w http.ResponseWriter, r *http.Request) {
	if _, err := s.app.UpdateAccount(r.Context(), r.PathValue("name"), app.AccountUpdate{Op: "delete"}); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
