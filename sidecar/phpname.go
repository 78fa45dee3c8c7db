package sidecar

import "strings"

// PHPFieldName is the name PHP registers a query or form field under: leading
// spaces dropped, " " and "." read as "_", and a "[" read as "_" when no
// "]" follows it, and then every " ", "." and "[" after it (PHP 8: my[sso[ref
// is my_sso_ref), while "a[x]" and "a[]" are fields of the array "a"
// (whose values count too: a framework that reads the array reads them).
func PHPFieldName(k string) string {
	if strings.IndexAny(k, " .[") < 0 {
		return k // as PHP reads it already: no copy
	}
	k = strings.TrimLeft(k, " ")
	var b strings.Builder
	for i := 0; i < len(k); i++ {
		switch c := k[i]; c {
		case ' ', '.':
			b.WriteByte('_')
		case '[':
			if strings.IndexByte(k[i+1:], ']') >= 0 {
				return b.String()
			}
			// PHP 8 reads the rest's " ", "." and "[" as "_" too.
			b.WriteByte('_')
			for _, c := range []byte(k[i+1:]) {
				if c == ' ' || c == '.' || c == '[' {
					c = '_'
				}
				b.WriteByte(c)
			}
			return b.String()
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
