package decisionlog

// secretFragments are the parts of a header or query parameter name that
// mark it as carrying a credential, whoever chose the name: a fixed list
// of names misses x-refresh-token, x-session-id, x-client-secret,
// api-key, cookie2 and the rest of the spellings applications invent.
// Names compare in any case with "_", "." and " " read as "-" (CGI, PHP
// and WSGI upstreams merge them), so the fragments are written that way.
// Assertions (client_assertion, SAMLResponse, x-goog-iap-jwt-assertion),
// OIDC and userinfo data and DPoP proofs are credentials too.
var secretFragments = []string{
	"token", "secret", "session", "sessid", "password", "passwd", "cookie",
	"api-key", "apikey", "credential", "signature", "assertion", "oidc",
	"userinfo", "dpop", "samlresponse", "saml-response",
}

// secretWords mark a name as carrying a credential only when they are a
// whole word: "sid" is a session id, "inside" is not; "pwd" is a
// password; "key" is x-functions-key, ocp-apim-subscription-key, the
// query's key and accessKey, where "keyboard" and "monkey" are not; "sig"
// is a signature, "signup" is not; "jwt" and "ticket" are credentials.
// A word is a run of letters and digits, and a lower-case letter followed
// by an upper-case one starts a new word (camelCase).
var secretWords = []string{"sid", "pwd", "key", "jwt", "sig", "ticket"}

// notSecretAuthWords begin with "auth" but carry no credential: the
// authority is the request's host, which the log keeps.
var notSecretAuthWords = []string{"authority", "author", "authors"}

// secretName reports whether a header or query parameter name carries a
// credential by its name: it holds one of secretFragments, one of
// secretWords as a word, or a word beginning with "auth" (auth,
// authorization, authn, x-auth-token...) other than notSecretAuthWords.
// It allocates nothing: it runs for every header of every logged check.
func secretName(name string) bool {
	for _, f := range secretFragments {
		if containsFolded(name, f) {
			return true
		}
	}
	for i := 0; i < len(name); {
		for i < len(name) && !alnum(name[i]) {
			i++
		}
		j := i
		for j < len(name) && alnum(name[j]) && (j == i || !camelBreak(name[j-1], name[j])) {
			j++
		}
		if w := name[i:j]; w != "" && (wordIs(w, secretWords...) || (hasPrefixFolded(w, "auth") && !wordIs(w, notSecretAuthWords...))) {
			return true
		}
		i = j
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
