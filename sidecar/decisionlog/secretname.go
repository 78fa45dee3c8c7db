package decisionlog

import (
	"slices"
	"unicode/utf8"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/paramkey"
)

// secretFragments are the parts of a header or query parameter name that
// mark it as carrying a credential, whoever chose the name: a fixed list
// of names misses x-refresh-token, x-session-id, x-client-secret,
// api-key, cookie2 and the rest of the spellings applications invent.
// Names compare in any case with "_", "." and " " read as "-" (CGI, PHP
// and WSGI upstreams merge them), so the fragments are written that way.
// Assertions (client_assertion, SAMLResponse, x-goog-iap-jwt-assertion),
// OIDC and userinfo data and DPoP proofs are credentials too, and so are
// webhook HMACs (x-shopify-hmac-sha256), a bearer under any name, pass
// codes and pass phrases, and SAML artifacts (SAMLart: the artifact
// binding's reference, which the identity provider trades for the
// assertion once).
var secretFragments = []string{
	"token", "secret", "session", "sessid", "password", "passwd", "cookie",
	"api-key", "apikey", "credential", "signature", "assertion", "oidc",
	"userinfo", "dpop", "samlresponse", "saml-response", "samlart", "saml-art",
	"hmac", "bearer", "passcode", "passphrase",
}

// secretWords mark a name as carrying a credential only when they are a
// whole word: "sid" is a session id, "inside" is not; "pwd", "pw", "pswd",
// "psw" and "pass" are a password (?user=alice&pass=...), "passage" and
// "compass" are not, and "passw" and "pword" are a password cut short;
// "cred" and "creds" are credentials, "credit" and "incredible" are not;
// "key" is x-functions-key, ocp-apim-subscription-key,
// the query's key and accessKey, where "keyboard" and "monkey" are not;
// "sig" is a signature, "signup" is not; "jwt" and "ticket" are
// credentials. One-time and second-factor codes (otp, totp, hotp, mfa,
// 2fa), a PIN, the PKCE code_verifier and a card's cvv or cvc are words
// of this kind: "otp" is no credential inside "hotpink", nor "pin" inside
// "shipping". "auth" is here for its compounds (basicauth, proxyauth,
// x-apiauth): as a word it begins with "auth", which secretName reads as
// a credential already. A word is a run of letters and digits, and a
// lower-case letter followed by an upper-case one starts a new word
// (camelCase); a compound written in one lower-case word counts too (see
// notSecretEndings), and so does its plural (accesskeys, passkeys).
var secretWords = []string{
	"sid", "pwd", "pw", "pswd", "psw", "pass", "passw", "pword", "cred", "creds", "key", "jwt", "sig", "ticket",
	"otp", "totp", "hotp", "mfa", "2fa", "pin", "verifier", "cvv", "cvc", "auth",
}

// secretWholeWords mark a name as carrying a credential only as a word of
// their own, never joined to another in one lower-case word: "sk" is a
// secret key (Stripe's sk, stripe_sk, stripeSk), and task, desk, risk and
// kiosk end in the same letters, skip and sku begin with them.
//
// "pan" (a card's primary account number), "ssn" and "iban" are words of
// this kind too: not credentials, but data PCI DSS and privacy law keep
// out of logs, where span, japan and company end in the same letters.
var secretWholeWords = []string{"sk", "pan", "ssn", "iban"}

// Names often reach Deputy as one lower-case word where their author
// wrote several: Envoy and every HTTP/2 client lower-case header names, so
// BunnyCDN's AccessKey and VTEX's X-VTEX-API-AppKey arrive as accesskey
// and x-vtex-api-appkey, with no camelCase break left; query names are
// often written so too (appkey, passkey). So a word also counts when it
// ends in one of secretWords (appkey, userpwd, userpass, cardpin, urlsig,
// basicauth), or in one and a plural "s" (accesskeys, appkeys), unless it
// is one of notSecretEndings (or its plural), ordinary words that merely
// end in the same letters; when it begins with one of secretStarts, which
// no ordinary word begins with (otpcode, pwdhash); and when it is the two
// words of a secretPairs entry run together (verificationcode,
// magiclink). A plural standing alone (keys, tickets, pins, x-keys) is
// a list of names or things more often than a credential and stays
// readable; joined in camelCase to the word before it (accessKeys,
// serviceTickets) it is the plural of a compound. "bypass" is left a
// credential on purpose: Vercel's x-vercel-protection-bypass carries a
// secret. "oauth" names the protocol (oauth_provider, oauth_callback);
// its credentials (oauth_token, oauth_signature, oauth_verifier) hold
// words of their own. Masking a field too many costs a log reader a
// value; missing a credential puts it in every log store the records
// reach.
var notSecretEndings = []string{
	"monkey", "donkey", "turkey", "hockey", "jockey", "whiskey", "lackey", "flunkey", "malarkey",
	"turnkey", "hotkey",
	"spin", "backspin", "topspin", "sidespin", "tailspin", "hairpin", "kingpin", "linchpin", "lynchpin",
	"tiepin", "terrapin", "pippin", "lupin",
	"compass", "encompass", "overpass", "underpass", "surpass", "trespass",
	"sacred",
	"oauth",
}

// secretStarts are the secretWords no ordinary word begins with: "key"
// begins keyboard, "sid" sidebar, "sig" signup, "pin" ping, "ticket"
// tickets, "hotp" hotpink, "cred" credit, and "jwt" is left out so that
// jwts stays a word of its own; "passw" begins password in more languages
// than one (passwort, passwoord), "pword" nothing else.
var secretStarts = []string{"pwd", "passw", "pword", "otp", "totp", "mfa", "2fa", "cvv", "cvc"}

// secretPairs are two words that carry a credential together where the
// second alone does not: a verification_code, a verify_code, an
// email_code, a two_factor_code (any factor_code: second_factor_code,
// multi_factor_code), a one-time code (onetime_code; one_time_code, the
// three words, is secretTriples'), an invite_code or a magic_link logs a
// user in or lets one sign up, a country_code, a promo_code, a timecode
// or a link does not. The OAuth state and nonce and the PKCE
// code_challenge are left in clear on purpose: a client shows them to
// anyone, and they are what a failed login is debugged with.
var secretPairs = [][2]string{
	{"verification", "code"}, {"security", "code"}, {"reset", "code"}, {"recovery", "code"},
	{"backup", "code"}, {"login", "code"}, {"access", "code"}, {"activation", "code"},
	{"confirmation", "code"}, {"sms", "code"}, {"verify", "code"}, {"email", "code"},
	{"factor", "code"}, {"twofactor", "code"}, {"onetime", "code"}, {"invite", "code"}, {"invitation", "code"},
	{"magic", "link"}, {"login", "link"}, {"reset", "link"},
	// Card and account numbers: not credentials, but what PCI DSS and
	// privacy law keep out of logs (a phone_number, an order_number are
	// not).
	{"card", "number"}, {"card", "num"}, {"cc", "number"}, {"cc", "num"}, {"credit", "card"},
	{"account", "number"}, {"acct", "number"}, {"routing", "number"},
}

// secretTriples are three words that carry a credential together where no
// two of them do: one_time_code (the one-time-code of HTML's
// autocomplete), where time_code is a video's timecode and one_time a
// kind of payment.
var secretTriples = [][3]string{{"one", "time", "code"}}

// notSecretAuthWords begin with "auth" but carry no credential: the
// authority is the request's host, which the log keeps.
var notSecretAuthWords = []string{"authority", "author", "authors"}

// secretName reports whether a header or query parameter name carries a
// credential by its name: it holds one of secretFragments, one of
// secretWords as a word or joined to another in one word (compoundIs),
// one of secretWholeWords as a word, two words of secretPairs or three
// of secretTriples in a row, a word beginning with "auth" (auth,
// authorization, authn, x-auth-token...) other than notSecretAuthWords,
// or a plural of one of secretWords joined in camelCase to the word
// before it, the two a compound (accessKeys). It allocates nothing: it
// runs for every header of every logged check.
func secretName(name string) bool {
	for _, f := range secretFragments {
		if containsFolded(name, f) {
			return true
		}
	}
	prev2, prev, prevStart, runStart := "", "", 0, 0
	for i := 0; i < len(name); {
		joined := i > 0 && i < len(name) && alnum(name[i]) // a camelCase break
		for i < len(name) && !alnum(name[i]) {
			i++
		}
		if !joined {
			runStart = i
		}
		j := i
		for j < len(name) && alnum(name[j]) && (j == i || !camelBreak(name[j-1], name[j])) {
			j++
		}
		// A word is read without the number that ends it: a second key
		// (sk2, accesskey2, card_number2) is as secret as the first.
		w := trimDigits(name[i:j])
		if w != "" && (wordIs(w, secretWords...) || wordIs(w, secretWholeWords...) || (hasPrefixFolded(w, "auth") && !wordIs(w, notSecretAuthWords...)) ||
			pairIs(prev, w) || tripleIs(prev2, prev, w) || compoundIs(w) ||
			joined && prev != "" && pluralWord(w) && compoundIs(trimDigits(name[prevStart:j]))) {
			return true
		}
		// A run of letters and digits that camelCase splits into pieces
		// is read whole as well: sK and pWd are sk and pwd.
		if joined && (j == len(name) || !alnum(name[j])) {
			if run := trimDigits(name[runStart:j]); wordIs(run, secretWords...) || wordIs(run, secretWholeWords...) {
				return true
			}
		}
		prev2, prev, prevStart, i = prev, w, i, j
	}
	return false
}

// trimDigits is w without the digits that end it.
func trimDigits(w string) string {
	n := len(w)
	for n > 0 && w[n-1] >= '0' && w[n-1] <= '9' {
		n--
	}
	return w[:n]
}

// compoundIs reports whether the word w, folded, is a credential word
// joined to another (see notSecretEndings): it ends in one of secretWords,
// or in one and a plural "s", and is not one of notSecretEndings (or its
// plural), begins with one of secretStarts, or is a pair of secretPairs
// or a triple of secretTriples run together.
func compoundIs(w string) bool {
	if endsInSecretWord(w) {
		return true
	}
	if n := len(w); n > 1 && fold(w[n-1]) == 's' && endsInSecretWord(w[:n-1]) {
		return true
	}
	for _, x := range secretStarts {
		if len(w) > len(x) && hasPrefixFolded(w, x) {
			return true
		}
	}
	for _, p := range secretPairs {
		if n := len(p[0]); len(w) == n+len(p[1]) && hasPrefixFolded(w, p[0]) && hasPrefixFolded(w[n:], p[1]) {
			return true
		}
	}
	for _, p := range secretTriples {
		if n, m := len(p[0]), len(p[1]); len(w) == n+m+len(p[2]) && hasPrefixFolded(w, p[0]) && hasPrefixFolded(w[n:], p[1]) && hasPrefixFolded(w[n+m:], p[2]) {
			return true
		}
	}
	return false
}

// endsInSecretWord reports whether the word w, folded, ends in one of
// secretWords after other letters and is not one of notSecretEndings.
func endsInSecretWord(w string) bool {
	if wordIs(w, notSecretEndings...) {
		return false
	}
	for _, x := range secretWords {
		if len(w) > len(x) && hasPrefixFolded(w[len(w)-len(x):], x) {
			return true
		}
	}
	return false
}

// pluralWord reports whether the word w, folded, is one of secretWords
// and a plural "s" (Keys, Tickets).
func pluralWord(w string) bool {
	n := len(w)
	return n > 1 && fold(w[n-1]) == 's' && wordIs(w[:n-1], secretWords...)
}

// pairIs reports whether the words a and b, folded, are one of
// secretPairs.
func pairIs(a, b string) bool {
	for _, p := range secretPairs {
		if wordIs(b, p[1]) && wordIs(a, p[0]) {
			return true
		}
	}
	return false
}

// tripleIs reports whether the words a, b and c, folded, are one of
// secretTriples.
func tripleIs(a, b, c string) bool {
	for _, p := range secretTriples {
		if wordIs(c, p[2]) && wordIs(b, p[1]) && wordIs(a, p[0]) {
			return true
		}
	}
	return false
}

// fold is c lowered, with "_", "." and " " read as "-".
func fold(c byte) byte {
	switch {
	case c >= 'A' && c <= 'Z':
		return c + 'a' - 'A'
	case c == '_' || c == '.' || c == ' ':
		return '-'
	}
	return c
}

// camelBreak reports whether a word ends between a and b: "accessKey" is
// "access" and "Key", "SAMLResponse" one word.
func camelBreak(a, b byte) bool {
	return a >= 'a' && a <= 'z' && b >= 'A' && b <= 'Z'
}

func alnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// containsFolded reports whether s, folded, contains sub (already folded).
func containsFolded(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if hasPrefixFolded(s[i:], sub) {
			return true
		}
	}
	return false
}

func hasPrefixFolded(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for k := 0; k < len(prefix); k++ {
		if fold(s[k]) != prefix[k] {
			return false
		}
	}
	return true
}

// wordIs reports whether w, folded, is one of words.
func wordIs(w string, words ...string) bool {
	for _, x := range words {
		if len(w) == len(x) && hasPrefixFolded(w, x) {
			return true
		}
	}
	return false
}

// anySpelling reports whether match holds for name as sent or for any of
// its other spellings.
func anySpelling(name string, match func(string) bool) bool {
	if match(name) {
		return true
	}
	for _, s := range spellings(name) {
		if match(s) {
			return true
		}
	}
	return false
}

// maxDecodes bounds how often spellings decodes a name: once for what an
// upstream decodes, more for a name encoded again to pass a filter that
// decodes once.
const maxDecodes = 3

// spellings returns the other names an upstream may read name as: its
// percent escapes decoded (up to maxDecodes times; an invalid escape stays
// as it is), and each of those and name itself with NUL and the other
// control characters dropped, as sanitizers drop them. A name holding no
// "%" and no control character (nearly every name) has none: it returns
// nil, and allocates nothing.
func spellings(name string) []string {
	if !needsDecoding(name) {
		return nil
	}
	var out []string
	add := func(s string) {
		if s != name && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	add(dropControls(name))
	for cur, n := name, 0; n < maxDecodes; n++ {
		dec := percentDecode(cur)
		if dec == cur {
			break
		}
		add(dec)
		add(dropControls(dec))
		cur = dec
	}
	return out
}

func needsDecoding(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '%' || c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

// percentDecode decodes every valid %XX in s, and every %uXXXX as IIS
// does (paramkey.DecodeIIS), and leaves the rest as it is; s itself when
// it holds none.
func percentDecode(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		if r, n := paramkey.UnitAt(s, i); n > 0 {
			if b == nil {
				b = append(make([]byte, 0, len(s)), s[:i]...)
			}
			b = utf8.AppendRune(b, r)
			i += n - 1
			continue
		}
		if s[i] == '%' && i+2 < len(s) && sidecar.IsHex(s[i+1]) && sidecar.IsHex(s[i+2]) {
			if b == nil {
				b = append(make([]byte, 0, len(s)), s[:i]...)
			}
			b = append(b, sidecar.Unhex(s[i+1])<<4|sidecar.Unhex(s[i+2]))
			i += 2
			continue
		}
		if b != nil {
			b = append(b, s[i])
		}
	}
	if b == nil {
		return s
	}
	return string(b)
}

// dropControls returns s without its C0 control characters and DEL; s
// itself when it holds none.
func dropControls(s string) string {
	isControl := func(c byte) bool { return c < 0x20 || c == 0x7f }
	i := 0
	for i < len(s) && !isControl(s[i]) {
		i++
	}
	if i == len(s) {
		return s
	}
	b := []byte(s[:i])
	for ; i < len(s); i++ {
		if !isControl(s[i]) {
			b = append(b, s[i])
		}
	}
	return string(b)
}
