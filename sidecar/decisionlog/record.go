package decisionlog

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
)

// Results as written in Record.Result.
const (
	ResultAllow = "allow"
	ResultDeny  = "deny"
)

// Record is one decision as it reaches a sink. Field names are the stable
// contract of the stdout lines and the Redis stream entries.
type Record struct {
	DecisionID     string    `json:"decision_id"`
	Time           time.Time `json:"time"`
	Actor          string    `json:"actor,omitempty"`
	Subject        string    `json:"subject,omitempty"`
	Mode           string    `json:"mode,omitempty"`
	Level          string    `json:"level,omitempty"`
	SessionID      string    `json:"session_id,omitempty"` // session or grant id
	Method         string    `json:"method,omitempty"`
	Host           string    `json:"host,omitempty"`
	Path           string    `json:"path,omitempty"`
	Result         string    `json:"result"`
	Reason         string    `json:"reason,omitempty"`
	HTTPStatus     int       `json:"http_status,omitempty"`
	BundleRevision string    `json:"bundle_revision,omitempty"`
	LatencyMS      float64   `json:"latency_ms"`
	TraceID        string    `json:"trace_id,omitempty"`
	DryRun         bool      `json:"dry_run,omitempty"`
	Error          string    `json:"error,omitempty"`

	// Input is the policy input after masking; Erased and Masked list the
	// paths removed and replaced, as OPA's decision logs do.
	Input     any      `json:"input,omitempty"`
	Erased    []string `json:"erased,omitempty"`
	Masked    []string `json:"masked,omitempty"`
	MaskError string   `json:"mask_error,omitempty"`
}

// newRecord copies the loggable facts of d. It leaves Input to the masker.
func newRecord(d *sidecar.Decision) *Record {
	r := &Record{
		DecisionID:     d.ID,
		Time:           d.Time.UTC(),
		Method:         d.Method,
		Host:           d.Host,
		Path:           d.Path,
		Result:         ResultDeny,
		Reason:         d.Reason,
		HTTPStatus:     d.HTTPStatus,
		BundleRevision: d.Revision,
		LatencyMS:      float64(d.Latency) / float64(time.Millisecond),
		TraceID:        TraceID(d.TraceID),
		DryRun:         d.DryRun,
		Error:          d.Error,
	}
	if d.Allowed {
		r.Result = ResultAllow
	}
	if d.Identity != nil {
		r.Actor = d.Identity.Subject
		r.Subject = d.Identity.Subject
	}
	if del := d.Delegation; del != nil {
		if del.Actor != "" {
			r.Actor = del.Actor
		}
		r.Subject = del.Subject
		r.Mode = del.Mode
		r.Level = del.Level
		r.SessionID = del.ID
	}
	return r
}

// TraceID returns the 32-hex trace id of a W3C traceparent value, or of a
// bare trace id, in lower case; "" when v is neither or is all zeros.
func TraceID(v string) string {
	v = strings.TrimSpace(v)
	switch {
	case len(v) == 32:
	case len(v) >= 55 && v[2] == '-' && v[35] == '-' && isHex(v[:2]) && v[:2] != "ff":
		// version-traceid-parentid-flags; future versions may append fields.
		if v[:2] == "00" && len(v) != 55 {
			return ""
		}
		if v[52] != '-' || !isHex(v[36:52]) || !isHex(v[53:55]) {
			return ""
		}
		v = v[3:35]
	default:
		return ""
	}
	if !isHex(v) || strings.Trim(v, "0") == "" {
		return ""
	}
	return strings.ToLower(v)
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// plainInput turns the policy input into fresh JSON-shaped Go values that
// masking may modify without touching the caller's copy.
func plainInput(in any) (any, error) {
	switch v := in.(type) {
	case nil:
		return nil, nil
	case ast.Value:
		return ast.JSON(v)
	case *ast.Term:
		return ast.JSON(v.Value)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	var out any
	err = json.Unmarshal(b, &out)
	return out, err
}
