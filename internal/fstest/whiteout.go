package fstest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The on-disk whiteout and opaque markers, spelled out independently of
// package whiteout (see the package doc).
const (
	// AUFSWhiteoutPrefix starts the name of an AUFS/OCI whiteout file:
	// ".wh.NAME" hides NAME.
	AUFSWhiteoutPrefix = ".wh."
	// AUFSOpaqueName is the AUFS/OCI opaque marker file inside a directory.
	AUFSOpaqueName = ".wh..wh..opq"
	// AUFS metadata directories that a union must never show.
	AUFSPlink = ".wh..wh.plnk"
	AUFSAufs  = ".wh..wh.aufs"
	AUFSOrph  = ".wh..wh.orph"

	// Kernel overlayfs xattrs, trusted.* as root, user.* with userxattr.
	TrustedOpaqueXattr   = "trusted.overlay.opaque"
	UserOpaqueXattr      = "user.overlay.opaque"
	TrustedWhiteoutXattr = "trusted.overlay.whiteout"
	UserWhiteoutXattr    = "user.overlay.whiteout"

	// FuseOverlayfsOpaqueXattr is fuse-overlayfs' own opaque marker.
	FuseOverlayfsOpaqueXattr = "user.fuseoverlayfs.opaque"
)

// Whiteout creates the kernel's whiteout for path: a character device 0/0.
func Whiteout(path string) Applier {
	return ApplyFunc(func(root string) error {
		if err := unix.Mknod(filepath.Join(root, path), unix.S_IFCHR, 0); err != nil {
			return fmt.Errorf("whiteout %q: %w", path, err)
		}
		return nil
	})
}

// AUFSWhiteout creates the AUFS/OCI whiteout for path: an empty file
// dir/.wh.NAME next to where NAME would be.
func AUFSWhiteout(path string) Applier {
	dir, name := filepath.Split(path)
	return createEmpty(filepath.Join(dir, AUFSWhiteoutPrefix+name), "aufs whiteout")
}

// AUFSOpaque marks dir opaque in the AUFS/OCI way: an empty file
// dir/.wh..wh..opq.
func AUFSOpaque(dir string) Applier {
	return createEmpty(filepath.Join(dir, AUFSOpaqueName), "aufs opaque")
}

// AUFSMeta creates the AUFS metadata directory name (AUFSPlink, AUFSAufs or
// AUFSOrph) under dir, with one file in it, as an AUFS branch holds them.
func AUFSMeta(dir, name string) Applier {
	p := filepath.Join(dir, name)
	return Group(CreateDir(p, 0o700), CreateFile(filepath.Join(p, "leftover"), []byte("aufs\n"), 0o600))
}

// Opaque marks dir opaque with trusted.overlay.opaque=y (kernel, as root).
func Opaque(dir string) Applier { return SetXattr(dir, TrustedOpaqueXattr, []byte("y")) }

// UserOpaque marks dir opaque with user.overlay.opaque=y (kernel with
// userxattr, rootless).
func UserOpaque(dir string) Applier { return SetXattr(dir, UserOpaqueXattr, []byte("y")) }

// FuseOverlayfsOpaque marks dir opaque with user.fuseoverlayfs.opaque=y.
func FuseOverlayfsOpaque(dir string) Applier {
	return SetXattr(dir, FuseOverlayfsOpaqueXattr, []byte("y"))
}

// XattrWhiteout creates the kernel 6.7+ xattr whiteout for path: an empty
// regular file with trusted.overlay.whiteout="" whose parent is marked
// trusted.overlay.opaque=x ("has xattr whiteouts", not opaque). A parent that
// already has an opaque value keeps it.
func XattrWhiteout(path string) Applier {
	return xattrWhiteout(path, TrustedWhiteoutXattr, TrustedOpaqueXattr)
}

// UserXattrWhiteout is XattrWhiteout with user.overlay.* names (userxattr).
func UserXattrWhiteout(path string) Applier {
	return xattrWhiteout(path, UserWhiteoutXattr, UserOpaqueXattr)
}

func xattrWhiteout(path, whiteoutName, opaqueName string) Applier {
	return ApplyFunc(func(root string) error {
		if err := createEmpty(path, "xattr whiteout").Apply(root); err != nil {
			return err
		}
		p := filepath.Join(root, path)
		if err := unix.Lsetxattr(p, whiteoutName, nil, 0); err != nil {
			return fmt.Errorf("xattr whiteout %q: %w", path, err)
		}
		parent := filepath.Dir(p)
		_, err := unix.Lgetxattr(parent, opaqueName, nil)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.ENODATA) {
			return fmt.Errorf("xattr whiteout %q: read parent opaque: %w", path, err)
		}
		if err := unix.Lsetxattr(parent, opaqueName, []byte("x"), 0); err != nil {
			return fmt.Errorf("xattr whiteout %q: mark parent: %w", path, err)
		}
		return nil
	})
}

func createEmpty(path, what string) Applier {
	return ApplyFunc(func(root string) error {
		f, err := os.OpenFile(filepath.Join(root, path), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return fmt.Errorf("%s %q: %w", what, path, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("%s %q: %w", what, path, err)
		}
		return nil
	})
}
