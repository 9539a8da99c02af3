package copyup

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/unionmount/unionmount/internal/xattr"
	"github.com/unionmount/unionmount/whiteout"
	"golang.org/x/sys/unix"
)

// xattrRule is what a copy-up does with one of the source's xattrs.
type xattrRule int

const (
	// xattrSkip: never carried; union bookkeeping of some layer
	// (whiteout.IsPrivateXattr). An opaque marker carried up would hide the
	// lower directory's children; an origin must describe the new copy.
	xattrSkip xattrRule = iota
	// xattrMust: carried, and any failure fails the copy-up: POSIX ACLs and
	// security.* (file capabilities, IMA), as the kernel's
	// ovl_must_copy_xattr.
	xattrMust
	// xattrOptional: carried; EOPNOTSUPP from the upper skips it (the
	// kernel's "ignore failure to copy unknown xattrs").
	xattrOptional
	// xattrPrivileged: trusted.*; also skipped on EPERM, since only a
	// privileged daemon may write it.
	xattrPrivileged
	// xattrBestEffort: tried, every failure ignored: security.selinux,
	// which the kernel relabels instead of copying.
	xattrBestEffort
)

func ruleFor(name string) xattrRule {
	switch {
	case whiteout.IsPrivateXattr(name):
		return xattrSkip
	case name == "security.selinux":
		return xattrBestEffort
	case name == "system.posix_acl_access", name == "system.posix_acl_default",
		strings.HasPrefix(name, "security."):
		return xattrMust
	case strings.HasPrefix(name, "trusted."):
		return xattrPrivileged
	}
	return xattrOptional
}

// tolerates reports whether a failure to set an xattr under this rule is
// skipped rather than failing the copy-up.
func (r xattrRule) tolerates(err error) bool {
	switch r {
	case xattrBestEffort:
		return true
	case xattrOptional:
		return err == unix.EOPNOTSUPP
	case xattrPrivileged:
		return err == unix.EOPNOTSUPP || err == unix.EPERM
	}
	return false
}

// copyXattrs copies src's xattrs to dst by the rules above, then sets
// extra. Both are paths whose last component is not followed, unless
// followDst: dst is then a descriptor's /proc/self/fd path.
func copyXattrs(src, dst string, followDst bool, typ uint32, extra map[string][]byte) error {
	setx := unix.Lsetxattr
	if followDst {
		setx = unix.Setxattr
	}
	names, err := listXattrs(src)
	if err != nil {
		return fmt.Errorf("list source xattrs: %w", err)
	}
	for _, name := range names {
		rule := ruleFor(name)
		if rule == xattrSkip {
			continue
		}
		value, err := getXattr(src, name)
		if err == unix.ENODATA { // gone since the listing
			continue
		}
		if err != nil {
			return fmt.Errorf("read xattr %q: %w", name, err)
		}
		if err := setx(dst, name, value, 0); err != nil && !rule.tolerates(err) {
			return fmt.Errorf("set xattr %q: %w", name, err)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(extra)) {
		err := setx(dst, name, extra[name], 0)
		if err == unix.EPERM && strings.HasPrefix(name, "user.") && typ != unix.S_IFREG && typ != unix.S_IFDIR {
			continue // Linux allows user.* only on regular files and directories
		}
		if err != nil {
			return fmt.Errorf("set xattr %q: %w", name, err)
		}
	}
	return nil
}

// listXattrs lists the xattr names of path (not following it). A
// filesystem without xattrs has none.
func listXattrs(path string) ([]string, error) {
	names, err := xattr.List(path)
	if err == unix.EOPNOTSUPP {
		return nil, nil
	}
	return names, err
}

func getXattr(path, name string) ([]byte, error) {
	return growRead(func(b []byte) (int, error) { return unix.Lgetxattr(path, name, b) })
}

// growRead calls a size-probing getter (listxattr, getxattr) until the
// buffer fits the value, which may grow between the probe and the read.
func growRead(get func([]byte) (int, error)) ([]byte, error) {
	for range 8 {
		n, err := get(nil)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, nil
		}
		buf := make([]byte, n)
		n, err = get(buf)
		if err == unix.ERANGE {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
	return nil, unix.ERANGE
}
