// Package xattr lists extended attributes. listxattr(2) fills a buffer
// with the names, each ended by a NUL, and fails with ERANGE when the
// buffer is short, which it can be even after a size probe: a name may be
// added between the two calls. List grows its buffer until the list fits;
// the kernel caps a list at 64 KiB (XATTR_LIST_MAX), so this ends.
package xattr

import (
	"slices"

	"golang.org/x/sys/unix"
)

// List returns the names of path's extended attributes, sorted, not
// following a final symlink. Errors are the syscall's errno, unwrapped:
// ENOTSUP (a filesystem without extended attributes) comes back as is,
// for a caller that compares errnos; one to whom it means "none" checks
// errors.Is(err, unix.ENOTSUP).
func List(path string) ([]string, error) {
	return list(func(b []byte) (int, error) { return unix.Llistxattr(path, b) })
}

// ListFd is List for an open file; fd may not be an O_PATH descriptor.
func ListFd(fd int) ([]string, error) {
	return list(func(b []byte) (int, error) { return unix.Flistxattr(fd, b) })
}

func list(get func([]byte) (int, error)) ([]string, error) {
	buf := make([]byte, 256)
	for {
		n, err := get(buf)
		if err == unix.ERANGE {
			size, err := get(nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, max(size, 2*len(buf)))
			continue
		}
		if err != nil {
			return nil, err
		}
		return Split(buf[:n]), nil
	}
}

// Split returns the names of a list as listxattr(2) writes it, sorted:
// NUL-ended names, the last NUL optional; empty names are dropped.
func Split(list []byte) []string {
	var names []string
	for len(list) > 0 {
		i := slices.Index(list, 0)
		if i < 0 {
			i = len(list)
		}
		if i > 0 {
			names = append(names, string(list[:i]))
		}
		list = list[min(i+1, len(list)):]
	}
	slices.Sort(names)
	return names
}
