package mcpwire

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Tool names, prompt names and resource URIs are what the policy decides
// on, compared as strings (startswith(uri, "secret://"), name == "x").
// Every consumer downstream must read the same string the policy did, so a
// name or URI that some parser would silently change is refused, never
// canonicalised: the gateway forwards exactly the bytes it decided on, and
// a string with nothing to normalise means nothing to read differently.
//
// A WHATWG URL parser (the TypeScript SDK's new URL()) strips leading and
// trailing C0 controls and spaces and removes tabs and newlines anywhere,
// lower-cases the scheme and treats "\" as "/" in special schemes; Unicode
// format characters (bidi overrides, zero-width space) are invisible to a
// person reviewing a log or a policy. Each of those is refused here.

// CheckName checks a tool or prompt name. MCP (2025-11-25) recommends
// 1-128 characters of [A-Za-z0-9_.-]; servers in use go beyond that (other
// characters, longer names with a federated prefix), so only what can make
// two readers disagree is refused: the empty name, control and format
// characters, and whitespace other than an inner space.
func CheckName(name string) error {
	if name == "" {
		return errors.New("must not be empty")
	}
	if err := checkText(name); err != nil {
		return err
	}
	for _, r := range name {
		if r != ' ' && unicode.IsSpace(r) {
			return fmt.Errorf("must not contain whitespace %U", r)
		}
	}
	return nil
}

// CheckURI checks a resource URI (or a URI template, as completion's
// ref.uri names one): an absolute URI (RFC 3986 §4.3) with a scheme in its
// canonical lower case, no control, format or surrounding whitespace
// characters, no backslash, and only well-formed percent-encodings. The
// scheme must be literal: "%73ecret://" is not "secret://" to the policy.
func CheckURI(uri string) error {
	if err := checkText(uri); err != nil {
		return err
	}
	scheme, _, ok := strings.Cut(uri, ":")
	if !ok || scheme == "" {
		return errors.New("must be an absolute URI (scheme:...)")
	}
	if err := checkScheme(scheme); err != nil {
		return err
	}
	for i := 0; i < len(uri); i++ {
		switch uri[i] {
		case '\\':
			// WHATWG URL parsers read it as "/" in http, file and other
			// special schemes; RFC 3986 does not allow it unencoded.
			return errors.New(`must not contain "\"; percent-encode it as %5C`)
		case '%':
			if i+2 >= len(uri) || !isHex(uri[i+1]) || !isHex(uri[i+2]) {
				return errors.New(`has a "%" that is not a percent-encoding (%XX)`)
			}
		}
	}
	for _, r := range uri {
		if unicode.IsSpace(r) && r != ' ' {
			return fmt.Errorf("must not contain whitespace %U", r)
		}
	}
	return nil
}

// checkScheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), in lower case.
func checkScheme(scheme string) error {
	for i := 0; i < len(scheme); i++ {
		c := scheme[i]
		switch {
		case c >= 'a' && c <= 'z':
		case c >= 'A' && c <= 'Z':
			return errors.New("scheme must be in lower case (its canonical form, RFC 3986 §3.1)")
		case i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return fmt.Errorf("scheme %s is not a URI scheme (RFC 3986 §3.1)", Quote(scheme))
		}
	}
	return nil
}

// checkText refuses what no name or URI may hold: invalid UTF-8, control
// characters (C0, DEL, C1), Unicode format characters (bidi controls,
// zero-width characters, the byte order mark) and whitespace at either
// end.
func checkText(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("must be valid UTF-8")
	}
	first, _ := utf8.DecodeRuneInString(s)
	last, _ := utf8.DecodeLastRuneInString(s)
	if unicode.IsSpace(first) || unicode.IsSpace(last) {
		return errors.New("must not begin or end with whitespace")
	}
	for _, r := range s {
		switch {
		case unicode.IsControl(r):
			return fmt.Errorf("must not contain control character %U", r)
		case unicode.Is(unicode.Cf, r):
			return fmt.Errorf("must not contain format character %U", r)
		}
	}
	return nil
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
