package delegation

import (
	"context"
	"path"
	"strings"

	"golang.org/x/text/unicode/norm"

	"github.com/deputyhq/deputy/sidecar"
)

// RedeemPath is the redeem link's path under the management API's prefix.
const RedeemPath = "impersonation/redeem"

// redeemCodeLen is the length of every redeem code Start issues:
// randomToken's 32 bytes, unpadded base64url.
const redeemCodeLen = 43

// maxExposedCodes bounds the store calls one exposed link costs.
const maxExposedCodes = 16

// maxUnescapes bounds the rounds of percent-decoding of a path: each one
// undoes one level of encoding, so a link encoded twice (%253F) takes two.
const maxUnescapes = 32

// What of a link ExposedRedeemCodes reads: the first maxRedeemSent bytes
// of its path as sent are decoded; of that, the first maxRedeemLead bytes
// are read for the redeem path and its "?", and the first maxRedeemLink
// for codes, as are that many of its query. A mangled link is short once
// decoded (the whole link in fullwidth characters is some 250 bytes,
// however often it was encoded), and decoding is cheap; normalizing
// (NFKC) is not, for characters it expands (U+FDFA is 18): a whole 60 KB
// path of them cost tens of milliseconds, and every check with a "%" or
// a byte outside ASCII in its path pays this function.
const (
	maxRedeemSent = 8192
	maxRedeemLead = 512
	maxRedeemLink = 2048
)

// ExposedRedeemCodes reads a request's path (as sent, still escaped) and
// query: when the path is the redeem link at prefix followed by a "?"
// that is not a literal one, and more, the link reached Deputy in a
// spelling that proxies' logs write whole (Envoy's %REQ_WITHOUT_QUERY%
// cuts at a literal "?" only), code included. Such a "?" is
// percent-encoded (%3F, %253F, at any level of encoding) or a look-alike
// a mail client, a word processor or an input method wrote in its place
// (fullwidth ？, small ﹖, ⁇, Arabic ؟; raw or percent-encoded as UTF-8:
// questionMarks). It then reports true, with every string in the rest of
// the link that may be a redeem code: each run of base64url characters of
// a code's length or more, cut to a code's length from either end,
// however the query around it was spelled or encoded (code=, code%3D, a
// parameter before it, a ">" a chat tool added after it). The path is
// read as a proxy that merges slashes, resolves dot segments and folds
// case routes it (//deputy/v1/..., .../x/../..., /Deputy/V1/...; Caddy's
// path matcher folds case), and in its compatibility form (fullwidth
// letters, ſ for s). A plain link (a literal "?") is not exposed.
func ExposedRedeemCodes(prefix, escapedPath, rawQuery string) ([]string, bool) {
	if plainASCII(escapedPath) {
		return nil, false // nearly every path: no escape, no look-alike, no "?" but a literal one
	}
	decoded := unescapeAll(escapedPath[:min(len(escapedPath), maxRedeemSent)])
	if !redeemHead(prefix, decoded[:min(len(decoded), maxRedeemLead)]) {
		return nil, false
	}
	_, tail, ok := strings.Cut(readLink(decoded[:min(len(decoded), maxRedeemLink)]), "?")
	if !ok {
		return nil, false
	}
	tail += "&" + unescapeAll(rawQuery[:min(len(rawQuery), maxRedeemLink)])
	var codes []string
	add := func(c string) {
		for _, have := range codes {
			if have == c {
				return
			}
		}
		codes = append(codes, c)
	}
	for i := 0; i < len(tail) && len(codes) < maxExposedCodes; {
		if !base64URL(tail[i]) {
			i++
			continue
		}
		j := i
		for j < len(tail) && base64URL(tail[j]) {
			j++
		}
		if run := tail[i:j]; len(run) >= redeemCodeLen {
			add(run[:redeemCodeLen])
			add(run[len(run)-redeemCodeLen:])
		}
		i = j
	}
	if len(codes) > maxExposedCodes {
		codes = codes[:maxExposedCodes]
	}
	return codes, true
}

// redeemHead reports whether decoded, a path read as a link (readLink),
// is the redeem path at prefix followed by a "?".
func redeemHead(prefix, decoded string) bool {
	head, _, ok := strings.Cut(readLink(decoded), "?")
	return ok && strings.HasPrefix(strings.ToLower(path.Clean("/"+head)), strings.ToLower(prefix+RedeemPath))
}

// readLink is a decoded path in its compatibility form, with every
// look-alike of "?" read as one.
func readLink(decoded string) string {
	return questionMarks.Replace(norm.NFKC.String(decoded))
}

// questionMarks reads as "?" the look-alikes that Unicode's compatibility
// form (NFKC, applied first: ？ and ﹖ are "?" there, ⁇ "??") leaves as
// they are: the Arabic and reversed question marks and the emoji ones.
var questionMarks = strings.NewReplacer("\u061F", "?", "\u2E2E", "?", "\u2753", "?", "\u2754", "?")

// plainASCII reports whether s holds neither "%", "?" nor a byte outside
// ASCII: no spelling of a "?" that is not a literal one.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '%' || c == '?' || c >= 0x80 {
			return false
		}
	}
	return true
}

func base64URL(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// unescapeAll undoes percent-encoding until none is left (at most
// maxUnescapes levels). A "%" not followed by two hex digits stays as it
// is: a log holds the link however malformed, so it is read, not refused.
func unescapeAll(s string) string {
	for range maxUnescapes {
		if !strings.Contains(s, "%") {
			return s
		}
		d := sidecar.UnescapeValid(s)
		if d == s {
			return s
		}
		s = d
	}
	return s
}

// redeemLinkEncoded is the answer to a redeem link that came with its "?"
// percent-encoded or as a look-alike, whatever became of its code: a live, used and unknown
// code read alike.
func redeemLinkEncoded() error {
	return &sidecar.Error{
		Code:   sidecar.EINVALID,
		Field:  "code",
		Reason: "redeem_link_encoded",
		Message: `this redeem link arrived with its "?" percent-encoded (as %3F) or written as a look-alike (as ？), a form proxy logs write whole, ` +
			"so its code may have been read there: the code is used up and can never be redeemed; " +
			"ask for a new link, and open it exactly as it was sent",
	}
}

// BurnExposed uses up the codes ExposedRedeemCodes read from a link, so
// none of them can ever be redeemed, and returns the refusal to answer
// with (EINVALID on field code, reason redeem_link_encoded). Policy is
// not asked: burning takes nothing from anyone but the holder of the
// link, who must ask for a new one. A code's session stays as it was,
// unredeemed. Each code used up is recorded in the audit trail
// (impersonation.code_burned, by Deputy, on the session, with its staff
// member as session_actor); one already used, or never issued, is not.
// Any other error is the store's: a code may not have been used up.
func (i *Impersonation) BurnExposed(ctx context.Context, codes []string) error {
	for _, c := range codes {
		s, err := i.store.BurnRedeemCode(ctx, HashSecret(c))
		switch sidecar.ErrorCode(err) {
		case "":
			i.logger.Warn("redeem code used up: its link came with the \"?\" percent-encoded or a look-alike, a form proxy logs write whole",
				"session", s.ID, "actor", s.Actor, "customer", s.Customer)
			i.appendAudit(ctx, &sidecar.AuditEntry{Actor: sidecar.SweepActor, Action: "impersonation.code_burned", Customer: s.Customer, Target: s.ID,
				Data: map[string]string{"session_actor": s.Actor, "reason": "redeem_link_encoded"}})
		case sidecar.ENOTFOUND:
		default:
			return err
		}
	}
	return redeemLinkEncoded()
}
