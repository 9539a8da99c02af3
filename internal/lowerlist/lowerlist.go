// Package lowerlist writes and reads lists of lower layers as overlayfs'
// lowerdir= takes them: paths joined by colons, leftmost on top, where a
// backslash makes the next character literal ("\:" is a colon in a path,
// "\\" a backslash).
//
// One escaping serves every reader of such a list: unionmount's --lower and
// -o lowerdir=, and the kernel's lowerdir=, upperdir= and workdir= in mount
// data. Escape puts a backslash before a backslash and a colon, which
// separate the paths; before a comma, which separates the options of a
// -o string or of mount data; and before a double quote, which unionmount
// takes to open a quoted -o value. Every reader drops the backslash again
// (the kernel in ovl_unescape), whatever character follows it.
package lowerlist

import (
	"errors"
	"strings"
)

var escaper = strings.NewReplacer(`\`, `\\`, `:`, `\:`, `,`, `\,`, `"`, `\"`)

// Escape escapes one path for a lower list or a layer option.
func Escape(path string) string {
	return escaper.Replace(path)
}

// Join escapes each path and joins them with colons: the inverse of Split.
func Join(paths []string) string {
	esc := make([]string, len(paths))
	for i, p := range paths {
		esc[i] = Escape(p)
	}
	return strings.Join(esc, ":")
}

// Split splits a lower list at unescaped colons and drops each escaping
// backslash. Empty paths are refused: "a::b" is the kernel's data-only
// layer syntax, which a union of directories has no use for. The errors
// say how to fix the list.
func Split(s string) ([]string, error) {
	var (
		out []string
		cur strings.Builder
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '\\':
			if i+1 == len(s) {
				return nil, errors.New(`ends in a lone backslash; escape it as \\`)
			}
			i++
			cur.WriteByte(s[i])
		case ':':
			if cur.Len() == 0 {
				return nil, errors.New("empty path in the list; remove the extra colon")
			}
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	if cur.Len() == 0 {
		return nil, errors.New("empty path in the list; remove the extra colon")
	}
	return append(out, cur.String()), nil
}
