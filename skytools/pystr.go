package skytools

import (
	"os"
	"os/user"
	"strings"
	"unicode"
	"unicode/utf8"
)

// This file holds the few Python str and os.path behaviours the config
// reader must reproduce exactly: what counts as whitespace, how keys are
// lowercased, how a file name gives the job name, and os.path.expanduser.

// pyIsSpace is Python's str.isspace for one character (also what re's \s
// and str.strip() use): Unicode White_Space plus the ASCII information
// separators U+001C..U+001F, which Python counts and Go does not.
func pyIsSpace(r rune) bool {
	return unicode.IsSpace(r) || r >= 0x1c && r <= 0x1f
}

// pyStrip is Python's str.strip() with no argument.
func pyStrip(s string) string { return strings.TrimFunc(s, pyIsSpace) }

// pyRstrip is Python's str.rstrip() with no argument.
func pyRstrip(s string) string { return strings.TrimRightFunc(s, pyIsSpace) }

// pyLower is Python's str.lower(), which ConfigParser applies to keys
// (optionxform): Go's per-rune lowercasing plus the two full case mappings
// Python applies and Go does not: U+0130 (capital I with dot above) lowers
// to "i" and a combining dot, and a capital sigma ending a word lowers to
// the final form.
func pyLower(s string) string {
	if isASCII(s) {
		return strings.ToLower(s)
	}
	rs := []rune(s)
	var b strings.Builder
	for i, r := range rs {
		switch r {
		case 'İ':
			b.WriteString("i\u0307")
		case 'Σ':
			if finalSigma(rs, i) {
				b.WriteRune('ς')
			} else {
				b.WriteRune('σ')
			}
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// finalSigma is Unicode's Final_Sigma condition as Python tests it: a
// cased letter before position i and none after it, skipping
// case-ignorable characters both ways.
func finalSigma(rs []rune, i int) bool {
	j := i - 1
	for j >= 0 && caseIgnorable(rs[j]) {
		j--
	}
	if j < 0 || !cased(rs[j]) {
		return false
	}
	j = i + 1
	for j < len(rs) && caseIgnorable(rs[j]) {
		j++
	}
	return j == len(rs) || !cased(rs[j])
}

func cased(r rune) bool {
	return unicode.In(r, unicode.Lu, unicode.Ll, unicode.Lt, unicode.Other_Lowercase, unicode.Other_Uppercase)
}

func caseIgnorable(r rune) bool {
	switch r {
	case '\'', '.', ':', '\u00b7', '\u0387', '\u055f', '\u05f4', '\u2027', '\ufe13', '\ufe55', '\uff1a',
		'\u2018', '\u2019', '\u2024', '\ufe52', '\uff07', '\uff0e':
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk)
}

// pyDecimal returns the value of a Unicode decimal digit (category Nd),
// which Python's int() and float() accept in place of ASCII digits. Nd
// characters come in contiguous runs of ten, zero first.
func pyDecimal(r rune) (int, bool) {
	if r >= '0' && r <= '9' {
		return int(r - '0'), true
	}
	if r < utf8.RuneSelf || !unicode.Is(unicode.Nd, r) {
		return 0, false
	}
	n := 0
	for unicode.Is(unicode.Nd, r-rune(n)-1) {
		n++
	}
	return n % 10, true
}

// pyNumberASCII is Python's _PyUnicode_TransformDecimalAndSpaceToASCII, the
// first step of int() and float() on a str, followed by their strip of
// ASCII whitespace: characters below U+007F stay, other whitespace becomes
// a space and other decimal digits ASCII digits; it reports false if any
// other character remains (the conversion then fails).
func pyNumberASCII(s string) (string, bool) {
	var b strings.Builder
	for _, r := range s {
		if r < 0x7f {
			b.WriteRune(r)
		} else if pyIsSpace(r) {
			b.WriteByte(' ')
		} else if d, ok := pyDecimal(r); ok {
			b.WriteByte(byte('0' + d))
		} else {
			return "", false
		}
	}
	return strings.Trim(b.String(), " \t\n\v\f\r"), true
}

// pyJobName is os.path.splitext(os.path.basename(filename))[0]: the base
// name without its last extension, where leading dots do not start an
// extension (".hidden" stays whole).
func pyJobName(filename string) string {
	base := filename[strings.LastIndexByte(filename, '/')+1:]
	dot := strings.LastIndexByte(base, '.')
	if dot <= 0 {
		return base
	}
	if strings.TrimLeft(base[:dot], ".") == "" {
		return base
	}
	return base[:dot]
}

// pyDirname is os.path.dirname: everything before the last slash, without
// trailing slashes unless it is all slashes.
func pyDirname(p string) string {
	head := p[:strings.LastIndexByte(p, '/')+1]
	if head != "" && strings.Trim(head, "/") != "" {
		head = strings.TrimRight(head, "/")
	}
	return head
}

// pyExpandUser is os.path.expanduser: a leading "~" is $HOME (or the
// password database's home of the current user when HOME is unset), a
// leading "~name" is that user's home; a path naming an unknown user, or
// not starting with "~", is returned unchanged.
func pyExpandUser(p string) string {
	if !strings.HasPrefix(p, "~") {
		return p
	}
	i := strings.IndexByte(p[1:], '/') + 1
	if i == 0 {
		i = len(p)
	}
	var home string
	if i == 1 {
		if h, ok := os.LookupEnv("HOME"); ok {
			home = h
		} else if u, err := user.Current(); err == nil {
			home = u.HomeDir
		} else {
			return p
		}
	} else {
		u, err := user.Lookup(p[1:i])
		if err != nil {
			return p
		}
		home = u.HomeDir
	}
	home = strings.TrimRight(home, "/")
	if out := home + p[i:]; out != "" {
		return out
	}
	return "/"
}
