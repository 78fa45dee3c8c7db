package sidecar

// Reseller assignments name customers by ids of ASCII letters, digits and
// the punctuation in assignedIDPunct alone. An upstream that looks
// customers up loosely, as MySQL's and MariaDB's collations do (*_ci,
// *_ai_ci, *_unicode_520_ci, uca1400), finds one row for "acme" and
// "ACME", and, depending on the collation, also for "acmé", "ａｃｍｅ",
// "łodz"/"lodz", "æon"/"aeon", "ß"/"s" or "ß"/"ss", "acme" with a trailing
// no-break space (PAD SPACE): no fold of Unicode agrees with all of them,
// so outside ASCII a domain could claim a variant of another domain's
// customer. Within the set, the collations differ in letter case alone,
// which FoldID removes.
const assignedIDPunct = "._-@:"

// AssignedIDChars says, in an error message, which ids may be assigned.
const AssignedIDChars = "ASCII letters, digits and . _ - @ :"

// ValidAssignedID reports whether s may name a customer in a reseller
// assignment; the error names field and the allowed characters.
func ValidAssignedID(field, s string) error {
	if s == "" {
		return Invalid(field, "required")
	}
	for i := 0; i < len(s); i++ {
		if !assignedIDByte(s[i]) {
			return Invalid(field, "must hold only %s", AssignedIDChars)
		}
	}
	return nil
}

func assignedIDByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	for i := 0; i < len(assignedIDPunct); i++ {
		if c == assignedIDPunct[i] {
			return true
		}
	}
	return false
}

// FoldID is the form under which Deputy files an assigned customer id
// (ValidAssignedID): lower case, so "acme" and "ACME", one customer to a
// case-insensitive upstream, are one customer to Deputy too and no two
// domains can hold both; the spelling as given stays the record's value.
// Only A-Z change: any other byte stays, so an id outside the set never
// folds onto one inside it. It allocates only when there is a capital.
func FoldID(s string) string {
	i := 0
	for i < len(s) && !('A' <= s[i] && s[i] <= 'Z') {
		i++
	}
	if i == len(s) {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		if 'A' <= b[i] && b[i] <= 'Z' {
			b[i] += 'a' - 'A'
		}
	}
	return string(b)
}

// SameFold reports whether a and b are one id up to the letter case
// FoldID removes (A-Z alone), without allocating.
func SameFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
