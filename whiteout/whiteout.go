package whiteout

import (
	"errors"
	"strings"

	"golang.org/x/sys/unix"
)

// Names and xattrs of the dialects.
const (
	// Prefix marks an AUFS/OCI whiteout file: ".wh.NAME" deletes NAME.
	Prefix = ".wh."
	// MetaPrefix starts AUFS bookkeeping names (opaque marker, plnk, aufs, orph).
	MetaPrefix = ".wh..wh."
	// OpaqueFile inside a directory makes it opaque (AUFS/OCI).
	OpaqueFile = ".wh..wh..opq"

	TrustedOpaque       = "trusted.overlay.opaque"
	UserOpaque          = "user.overlay.opaque"
	TrustedWhiteout     = "trusted.overlay.whiteout"
	UserWhiteout        = "user.overlay.whiteout"
	FuseOverlayfsOpaque = "user.fuseoverlayfs.opaque"

	// PrivatePrefix holds unionmount's own bookkeeping xattrs (e.g. origin).
	PrivatePrefix = "unionmount."
)

// Opacity is what a directory's markers say about the directories below it.
type Opacity int

const (
	// NotOpaque: the directory merges with the ones below.
	NotOpaque Opacity = iota
	// Opaque: directories of the same name in lower layers are hidden.
	Opaque
	// XattrWhiteouts: not opaque, but entries may be xattr whiteouts
	// (opaque=x, kernel 6.7+); check regular empty files with IsXattrWhiteout.
	XattrWhiteouts
)

// AUFSTarget reports whether name is an AUFS whiteout ".wh.NAME" and returns
// NAME. AUFS metadata names (".wh..wh.*") are not whiteouts.
func AUFSTarget(name string) (string, bool) {
	if !strings.HasPrefix(name, Prefix) || strings.HasPrefix(name, MetaPrefix) {
		return "", false
	}
	t := name[len(Prefix):]
	if t == "" || t == "." || t == ".." {
		return "", false
	}
	return t, true
}

// IsMeta reports whether name is AUFS bookkeeping that never shows
// (".wh..wh..opq", ".wh..wh.plnk", ".wh..wh.aufs", ".wh..wh.orph", ...).
func IsMeta(name string) bool { return strings.HasPrefix(name, MetaPrefix) }

// Hidden reports whether a directory entry of this name never shows in a
// merged listing by its name alone (AUFS whiteouts and metadata).
func Hidden(name string) bool { return strings.HasPrefix(name, Prefix) }

// IsCharWhiteout reports whether st is the kernel's whiteout: a character
// device with device number 0/0.
func IsCharWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// IsPrivateXattr reports whether an xattr belongs to the union itself and
// must be hidden from (and refused to) users of a mount: any
// "trusted.overlay.*", "user.overlay.*", unionmount's own and
// fuse-overlayfs' markers.
func IsPrivateXattr(name string) bool {
	ns, rest, ok := strings.Cut(name, ".")
	if !ok {
		return false
	}
	switch ns {
	case "trusted", "user":
		return strings.HasPrefix(rest, "overlay.") || strings.HasPrefix(rest, PrivatePrefix) ||
			strings.HasPrefix(rest, "fuseoverlayfs.")
	}
	return false
}

// getxattrFd reads a small xattr of an open fd; ENODATA and friends are "absent".
func getxattrFd(fd int, name string) (string, bool) {
	var buf [16]byte
	n, err := unix.Fgetxattr(fd, name, buf[:])
	if err != nil || n < 0 {
		return "", false
	}
	return string(buf[:n]), true
}

// getxattrPath reads a small xattr of path without following a final symlink.
func getxattrPath(path, name string) (string, bool) {
	var buf [16]byte
	n, err := unix.Lgetxattr(path, name, buf[:])
	if err != nil || n < 0 {
		return "", false
	}
	return string(buf[:n]), true
}

func opacityOf(get func(string) (string, bool)) Opacity {
	x := false
	for _, name := range [...]string{TrustedOpaque, UserOpaque} {
		if v, ok := get(name); ok {
			switch v {
			case "y":
				return Opaque
			case "x":
				x = true
			}
		}
	}
	if v, ok := get(FuseOverlayfsOpaque); ok && v == "y" {
		return Opaque
	}
	if x {
		return XattrWhiteouts
	}
	return NotOpaque
}

// DirOpacity reads the xattr markers of a directory open at fd (not O_PATH).
// It does not look for the AUFS ".wh..wh..opq" file: callers that list the
// directory see it; others call HasOpaqueFile.
func DirOpacity(fd int) Opacity {
	return opacityOf(func(n string) (string, bool) { return getxattrFd(fd, n) })
}

// DirOpacityPath is DirOpacity for a path.
func DirOpacityPath(path string) Opacity {
	return opacityOf(func(n string) (string, bool) { return getxattrPath(path, n) })
}

// HasOpaqueFile reports whether the directory dirfd holds ".wh..wh..opq".
func HasOpaqueFile(dirfd int) bool {
	var st unix.Stat_t
	return unix.Fstatat(dirfd, OpaqueFile, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}

// IsXattrWhiteoutPath reports whether path (a regular empty file in a
// directory marked opaque=x) carries an overlay.whiteout xattr.
func IsXattrWhiteoutPath(path string) bool {
	for _, n := range [...]string{TrustedWhiteout, UserWhiteout} {
		if _, err := unix.Lgetxattr(path, n, nil); err == nil {
			return true
		}
	}
	return false
}

// Format chooses what this mount writes. Rootless mounts cannot write
// trusted.* xattrs and write user.overlay.* instead, as the kernel does with
// -o userxattr.
type Format struct {
	Rootless bool
}

// OpaqueXattr is the xattr name this format writes for opaque directories.
func (f Format) OpaqueXattr() string {
	if f.Rootless {
		return UserOpaque
	}
	return TrustedOpaque
}

// MakeWhiteout creates a whiteout for name in the directory dirfd: a char
// 0/0 device, or an AUFS ".wh.NAME" file where mknod is refused.
func (f Format) MakeWhiteout(dirfd int, name string) error {
	err := unix.Mknodat(dirfd, name, unix.S_IFCHR|0, 0)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	fd, err2 := unix.Openat(dirfd, Prefix+name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err2 != nil {
		return err
	}
	return unix.Close(fd)
}

// SetOpaque marks the directory open at fd (not O_PATH) opaque with the
// format's xattr. Where xattrs are refused it creates ".wh..wh..opq" inside;
// it never writes both.
func (f Format) SetOpaque(fd int) error {
	err := unix.Fsetxattr(fd, f.OpaqueXattr(), []byte("y"), 0)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	wfd, err2 := unix.Openat(fd, OpaqueFile, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err2 != nil {
		return err
	}
	return unix.Close(wfd)
}
