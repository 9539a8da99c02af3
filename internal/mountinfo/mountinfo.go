// Package mountinfo reads the mount table of a mount namespace as
// /proc/PID/mountinfo shows it (proc_pid_mountinfo(5)): one line per mount,
//
//	36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//	id parent major:minor root mountpoint options [optional...] - fstype source super-options
//
// The kernel writes the paths with space, tab, newline and backslash as
// three-digit octal escapes (\040, \011, \012, \134); Parse undoes them, so
// a Mount's paths compare equal to the paths a program uses. A mount point
// shows with its symlinks resolved. Several mounts may share a mount point:
// the later line is on top, and it is the one the path shows.
package mountinfo

import (
	"bufio"
	"io"
	"os"
	"strconv"
	"strings"
)

// Mount is one line of a mountinfo file.
type Mount struct {
	ID, Parent   uint64
	Dev          string // major:minor of the filesystem
	Root         string // the directory of the filesystem mounted here
	Mountpoint   string
	Options      string // per-mount options: rw,nosuid,relatime,idmapped...
	FSType       string // "ext4", "fuse.unionmount"...
	Source       string
	SuperOptions string // options of the filesystem, as it shows them
}

// HasOption reports whether o is one of the per-mount options.
func (m Mount) HasOption(o string) bool {
	for _, x := range strings.Split(m.Options, ",") {
		if x == o {
			return true
		}
	}
	return false
}

// Parse reads the mountinfo text of r. A line without the six leading
// fields, or whose id or parent id is not a number, is skipped: the kernel
// writes none, and a program that reads a mountinfo to find one mount has
// no use for it. A line without the "-" separator has no type, source or
// super options.
func Parse(r io.Reader) ([]Mount, error) {
	var out []Mount
	br := bufio.NewReader(r)
	for {
		// No line length limit: the super options of an overlay with
		// many layers run to tens of kilobytes.
		line, err := br.ReadString('\n')
		if m, ok := parseLine(line); ok {
			out = append(out, m)
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

func parseLine(line string) (Mount, bool) {
	// Fields are separated by one space. Split on spaces alone: the kernel
	// escapes only space, tab, newline and backslash, so a path may hold a
	// \r, \v or \f that strings.Fields would take for a separator.
	f := strings.FieldsFunc(strings.TrimSuffix(line, "\n"), func(r rune) bool { return r == ' ' })
	if len(f) < 6 {
		return Mount{}, false
	}
	id, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return Mount{}, false
	}
	parent, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return Mount{}, false
	}
	m := Mount{
		ID:         id,
		Parent:     parent,
		Dev:        f[2],
		Root:       Unescape(f[3]),
		Mountpoint: Unescape(f[4]),
		Options:    f[5],
	}
	for i := 6; i < len(f); i++ {
		if f[i] != "-" {
			continue // an optional field (shared:N, master:N...)
		}
		rest := f[i+1:]
		if len(rest) > 0 {
			m.FSType = Unescape(rest[0])
		}
		if len(rest) > 1 {
			m.Source = Unescape(rest[1])
		}
		if len(rest) > 2 {
			m.SuperOptions = rest[2]
		}
		break
	}
	return m, true
}

// ReadFile parses the mountinfo file at path, such as /proc/PID/mountinfo.
func ReadFile(path string) ([]Mount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f)
}

// Self parses /proc/self/mountinfo: the mounts of this process's mount
// namespace.
func Self() ([]Mount, error) {
	return ReadFile("/proc/self/mountinfo")
}

// On returns the mounts whose mount point is path (clean, absolute,
// symlinks resolved), bottom first: the last one is what path shows.
func On(mounts []Mount, path string) []Mount {
	var out []Mount
	for _, m := range mounts {
		if m.Mountpoint == path {
			out = append(out, m)
		}
	}
	return out
}

// IsMountpoint reports whether path (clean, absolute, symlinks resolved)
// is a mount point in this process's mount namespace.
func IsMountpoint(path string) (bool, error) {
	mounts, err := Self()
	if err != nil {
		return false, err
	}
	return len(On(mounts, path)) > 0, nil
}

// Unescape undoes the kernel's octal escapes in a mountinfo field: a
// backslash and three octal digits of a value up to 0377 become that byte.
// Anything else, such as a backslash that does not start a full escape,
// stays as it is.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, ok := octalByte(s[i+1 : i+4]); ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// octalByte reads three octal digits of a value that fits a byte.
func octalByte(d string) (byte, bool) {
	v := 0
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '7' {
			return 0, false
		}
		v = v*8 + int(d[i]-'0')
	}
	return byte(v), v <= 0377
}
