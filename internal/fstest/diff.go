package fstest

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"golang.org/x/sys/unix"
)

// Field names a part of an Entry that Diff compares.
type Field uint32

const (
	FieldMode     Field = 1 << iota // permission, setuid, setgid, sticky bits
	FieldOwner                      // uid and gid
	FieldSize                       // size of regular files and symlinks
	FieldContent                    // sha256 of regular files
	FieldTarget                     // symlink target
	FieldRdev                       // device number of device nodes
	FieldNlink                      // link count of non-directories
	FieldDirNlink                   // link count of directories
	FieldXattrs                     // xattrs kept by the snapshot's filter
	FieldInoClass                   // hard-link structure
	FieldMtime                      // modification time
	FieldAtime                      // access time

	// DefaultFields is what Diff compares unless told otherwise: everything
	// but directory link counts (overlayfs reports 1 for merged
	// directories) and access times (reading a file for its hash moves it).
	DefaultFields = FieldMode | FieldOwner | FieldSize | FieldContent | FieldTarget |
		FieldRdev | FieldNlink | FieldXattrs | FieldInoClass | FieldMtime
)

// DiffOption adjusts Diff.
type DiffOption func(*Field)

// IgnoreFields makes Diff skip f.
func IgnoreFields(f Field) DiffOption { return func(c *Field) { *c &^= f } }

// CompareFields makes Diff also compare f.
func CompareFields(f Field) DiffOption { return func(c *Field) { *c |= f } }

// Diff compares two snapshots and returns one readable line per difference,
// sorted: "p: missing" (in want, not in got), "p: unexpected" (in got only),
// "p: FIELD WANT != GOT". Type is always compared; when types differ the other
// fields of that path are not.
func Diff(want, got Tree, opts ...DiffOption) []string {
	fields := DefaultFields
	for _, o := range opts {
		o(&fields)
	}
	var out []string
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			out = append(out, quotePath(p)+": missing")
			continue
		}
		for _, d := range diffEntry(w, g, fields) {
			out = append(out, quotePath(p)+": "+d)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			out = append(out, quotePath(p)+": unexpected")
		}
	}
	sort.Strings(out)
	return out
}

func diffEntry(w, g Entry, f Field) []string {
	if w.Type != g.Type {
		return []string{fmt.Sprintf("type %s != %s", w.Type, g.Type)}
	}
	if w.Type == TypeVanished {
		return nil
	}
	var d []string
	add := func(field, wv, gv string) {
		if wv != gv {
			d = append(d, fmt.Sprintf("%s %s != %s", field, wv, gv))
		}
	}
	if f&FieldMode != 0 {
		add("mode", fmt.Sprintf("%04o", w.Mode), fmt.Sprintf("%04o", g.Mode))
	}
	if f&FieldOwner != 0 {
		add("owner", fmt.Sprintf("%d:%d", w.UID, w.GID), fmt.Sprintf("%d:%d", g.UID, g.GID))
	}
	sized := w.Type == TypeFile || w.Type == TypeSymlink
	if f&FieldSize != 0 && sized {
		add("size", strconv.FormatInt(w.Size, 10), strconv.FormatInt(g.Size, 10))
	}
	if f&FieldContent != 0 && w.Type == TypeFile {
		add("content sha256", short(w.SHA256), short(g.SHA256))
	}
	if f&FieldTarget != 0 && w.Type == TypeSymlink {
		add("target", strconv.Quote(w.Target), strconv.Quote(g.Target))
	}
	if f&FieldRdev != 0 && (w.Type == TypeChar || w.Type == TypeBlock) {
		add("rdev", rdev(w.Rdev), rdev(g.Rdev))
	}
	if (f&FieldNlink != 0 && w.Type != TypeDir) || (f&FieldDirNlink != 0 && w.Type == TypeDir) {
		add("nlink", strconv.FormatUint(w.Nlink, 10), strconv.FormatUint(g.Nlink, 10))
	}
	if f&FieldXattrs != 0 {
		d = append(d, diffXattrs(w.Xattrs, g.Xattrs)...)
	}
	if f&FieldInoClass != 0 {
		add("ino class", quotePath(w.InoClass), quotePath(g.InoClass))
	}
	if f&FieldMtime != 0 {
		add("mtime", stamp(w.Mtime), stamp(g.Mtime))
	}
	if f&FieldAtime != 0 {
		add("atime", stamp(w.Atime), stamp(g.Atime))
	}
	return d
}

func diffXattrs(w, g map[string]string) []string {
	var d []string
	for name, wv := range w {
		gv, ok := g[name]
		switch {
		case !ok:
			d = append(d, fmt.Sprintf("xattr %s missing", name))
		case wv != gv:
			d = append(d, fmt.Sprintf("xattr %s %s != %s", name, quoteValue(wv), quoteValue(gv)))
		}
	}
	for name := range g {
		if _, ok := w[name]; !ok {
			d = append(d, fmt.Sprintf("xattr %s unexpected", name))
		}
	}
	sort.Strings(d)
	return d
}

func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12]
	}
	return sum
}

func rdev(r uint64) string { return fmt.Sprintf("%d:%d", unix.Major(r), unix.Minor(r)) }

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func quoteValue(v string) string {
	if len(v) > 40 {
		return strconv.Quote(v[:40]) + "..."
	}
	return strconv.Quote(v)
}

// quotePath leaves ordinary paths (spaces included) alone and quotes those
// with control characters, backslashes, quotes or invalid UTF-8, so that a
// name with a newline stays on one line.
func quotePath(p string) string {
	for _, r := range p {
		if r == '\\' || r == '"' || r == unicode.ReplacementChar || !unicode.IsPrint(r) && r != ' ' {
			return strconv.Quote(p)
		}
	}
	if strings.TrimSpace(p) != p || p == "" {
		return strconv.Quote(p)
	}
	return p
}
