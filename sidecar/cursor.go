package sidecar

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strconv"
	"time"
)

// CursorKeySize is the length of the key that seals list cursors.
const CursorKeySize = 32

// Cursors seals the positions a store resumes a list from. A list that
// filters may stop after records the caller was not given (the Redis
// store stops after examining a bounded number of them), and its position
// is then such a record: its id, time and customer. Sealed (AES-GCM), a
// cursor says nothing about the position to whoever holds it, and
// authenticated with the list's scope it opens only on the list that made
// it: a caller cannot forge one to start where paging would not have
// taken them. Every replica of a store must seal with the same key.
type Cursors struct{ aead cipher.AEAD }

// NewCursorKey makes a random key for NewCursors.
func NewCursorKey() []byte {
	key := make([]byte, CursorKeySize)
	_, _ = rand.Read(key) // never fails (crypto/rand)
	return key
}

// NewCursors seals with key, CursorKeySize random bytes.
func NewCursors(key []byte) (*Cursors, error) {
	if len(key) != CursorKeySize {
		return nil, fmt.Errorf("cursor key: %d bytes, want %d", len(key), CursorKeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, err
	}
	return &Cursors{aead: aead}, nil
}

// Seal makes the cursor of position on the list scope names.
func (c *Cursors) Seal(scope, position string) string {
	return base64.RawURLEncoding.EncodeToString(c.aead.Seal(nil, nil, []byte(position), []byte(scope)))
}

// Open returns the position a cursor of the list scope names was sealed
// from. A cursor garbled, altered, sealed with another key or for another
// list is EINVALID on the field "cursor".
func (c *Cursors) Open(scope, cursor string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err == nil {
		b, err = c.aead.Open(nil, nil, b, []byte(scope))
	}
	if err != nil {
		return "", Invalid("cursor", "malformed cursor")
	}
	return string(b), nil
}

// CursorScope names the list f reads, but not the page size: a cursor
// resumes only the list that answered it.
func (f SessionFilter) CursorScope() string {
	return scope("sessions", f.Actor, f.Customer, strconv.FormatBool(f.LiveOnly), scopeTime(f.From), scopeTime(f.To))
}

// CursorScope names the list f reads, but not the page size.
func (f RequestFilter) CursorScope() string {
	return scope("requests", f.Customer, f.PartnerOrg, f.Status)
}

// AssignmentsScope names the list of a domain's assignments.
func AssignmentsScope(domain string) string { return scope("assignments", domain) }

// scope joins the fields quoted, so that two lists never share a scope.
func scope(fields ...string) string {
	out := ""
	for _, f := range fields {
		out += strconv.Quote(f)
	}
	return out
}

func scopeTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixNano(), 10)
}
