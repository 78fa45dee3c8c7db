package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/strictjson"
)

// Decode reads r's body into v: at most limit bytes, unknown fields,
// repeated keys, keys in another case than the field's and invalid UTF-8
// refused, one JSON value only. Every failure is an error naming the field
// (or "body" when the document itself is wrong).
func Decode(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	if limit <= 0 {
		limit = DefaultMaxBodyBytes
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		return sidecar.Invalid("body", "content type must be application/json, not %q", ct)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return decodeError(err, limit)
	}
	// encoding/json would read invalid UTF-8 as U+FFFD, keep the last of a
	// repeated key and match a key to a field in any case: refused, so a
	// body means what it spells.
	if p, bad := strictjson.Check(body, v); bad {
		return sidecar.Invalid(p.Field, "%s", p.Message)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err, limit)
	}
	// Anything after the first value (a second object, stray text) is refused.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return decodeError(err, limit)
		}
		return sidecar.Invalid("body", "unexpected data after the JSON value")
	}
	return nil
}

func decodeError(err error, limit int64) error {
	var (
		mbe *http.MaxBytesError
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return &sidecar.Error{Code: sidecar.ETOOLARGE, Field: "body", Message: "request body larger than the limit of " + itoa(limit) + " bytes"}
	case errors.Is(err, io.EOF):
		return sidecar.Invalid("body", "a JSON object is required")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return sidecar.Invalid("body", "truncated JSON")
	case errors.As(err, &syn):
		return sidecar.Invalid("body", "malformed JSON at offset %d", syn.Offset)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "body"
		}
		return sidecar.Invalid(field, "must be %s, not %s", jsonType(typ.Type.Kind().String()), typ.Value)
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if field := strings.Trim(name, `"`); field != "" {
			return sidecar.Invalid(field, "unknown field")
		}
		return sidecar.Invalid("body", "unknown field %s", name)
	}
	var se *sidecar.Error
	if errors.As(err, &se) {
		return se // from a custom UnmarshalJSON
	}
	return sidecar.Invalid("body", "%v", err)
}

// jsonType names a Go kind the way a JSON client thinks of it.
func jsonType(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	}
	return "a " + kind
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
