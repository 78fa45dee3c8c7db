package api

import (
	"context"
	"maps"
	"net/http"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// manageRecord is what Authorize knows of one manage decision before the
// policy answers.
type manageRecord struct {
	start    time.Time
	id       *sidecar.Identity
	input    map[string]any     // as the policy sees it
	revision string             // of the activation that answered
	policy   *policy.Activation // that answered, whose mask rules the log applies
}

// callKey carries a call's callDecisions to Authorize.
type callKey struct{}

// callDecisions holds the manage decisions of one API call until the call
// has answered: a record's http_status is the status the caller got (an
// allowed redeem whose code is bad answered 401), its result the policy's
// answer.
type callDecisions struct {
	r       *http.Request
	mu      sync.Mutex
	pending []*sidecar.Decision
}

// recordCall wraps one call so that the decisions its handler asks for
// are logged, with the call's status, by the returned flush.
func (s *Server) recordCall(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *http.Request, func()) {
	call := &callDecisions{r: r}
	sw := &statusWriter{ResponseWriter: w}
	r = r.WithContext(context.WithValue(r.Context(), callKey{}, call))
	return sw, r, func() {
		call.mu.Lock()
		defer call.mu.Unlock()
		for _, d := range call.pending {
			d.HTTPStatus = sw.status()
			s.decisions.Log(d)
		}
		call.pending = nil
	}
}

// logDecision hands the manage policy's answer to the decision log: a
// refusal (err) or an allow (a), with the call's method, host and path and
// the input as loggedInput keeps it. Inside an API call the record waits
// for the call's status; outside one it is logged with the status err
// maps to.
func (s *Server) logDecision(ctx context.Context, rec manageRecord, a *Authorization, err error) {
	if s.decisions == nil {
		return
	}
	// No ID: the decision log gives every record without one its own.
	d := &sidecar.Decision{Time: rec.start, Identity: rec.id, Latency: s.clock().Sub(rec.start),
		HTTPStatus: http.StatusOK, Revision: rec.revision}
	if rec.policy != nil {
		d.Policy = rec.policy
	}
	// A fresh AST value: no caller changes it while the log masks it, off
	// the call's path. The input was converted once already for the
	// policy, so this cannot fail.
	if in, verr := ast.InterfaceToValue(loggedInput(rec.input, rec.id)); verr == nil {
		d.Input = in
	}
	switch {
	case err != nil && a == nil:
		d.HTTPStatus, d.Reason, d.Error = sidecar.HTTPStatus(err), "evaluation_error", err.Error()
	case err != nil:
		d.HTTPStatus, d.Reason = sidecar.HTTPStatus(err), a.Reason
	default:
		d.Allowed, d.Reason = true, a.Reason
	}
	call, ok := ctx.Value(callKey{}).(*callDecisions)
	if !ok {
		s.decisions.Log(d)
		return
	}
	d.Method, d.Host, d.Path = call.r.Method, call.r.Host, call.r.URL.Path
	call.mu.Lock()
	call.pending = append(call.pending, d)
	call.mu.Unlock()
}

// loggedInput is the manage input as the decision log keeps it. The
// identity loses its raw claims (every claim of the token, an ssn or an
// address among them), email and display name: sub, iss, org, domain,
// roles and privileges say who was refused what. The target loses the
// free-text reason a caller typed; the audit trail keeps it for what was
// done. data.system.log.mask then applies as to a check's input.
func loggedInput(in map[string]any, id *sidecar.Identity) map[string]any {
	out := maps.Clone(in)
	if id != nil {
		ident := identityInput(id)
		delete(ident, "claims")
		delete(ident, "email")
		delete(ident, "name")
		out["identity"] = ident
	}
	if t, ok := in["target"].(map[string]any); ok {
		if _, has := t["reason"]; has {
			t = maps.Clone(t)
			delete(t, "reason")
			out["target"] = t
		}
	}
	return out
}

// statusWriter remembers the status a call answered with.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}
