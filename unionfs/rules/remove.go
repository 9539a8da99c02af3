package rules

import (
	"errors"

	"github.com/unionmount/unionmount/internal/rmtree"
	"golang.org/x/sys/unix"
)

// CheckRemove decides whether unlink (rmdir false) or rmdir (true) may
// remove the entry e: ENOTDIR, EISDIR, or ENOTEMPTY for a directory whose
// merged listing is not empty (empty is asked only for a directory).
func CheckRemove(e Entry, rmdir bool, empty func() (bool, error)) error {
	if rmdir && !e.Dir {
		return unix.ENOTDIR
	}
	if !rmdir && e.Dir {
		return unix.EISDIR
	}
	if e.Dir {
		ok, err := empty()
		if err != nil {
			return err
		}
		if !ok {
			return unix.ENOTEMPTY
		}
	}
	return nil
}

// Remove takes name, the entry e of the union, out of the upper directory
// dir (ovl_do_remove), leaving a whiteout when e.NeedsWhiteout: a lower
// topmost entry is only ever hidden by one; an upper entry is removed, and
// replaced by a whiteout in the same step (RENAME_WHITEOUT) when a lower
// layer shows the name below it. CheckRemove comes first.
func (u *Upper) Remove(dir int, name string, e Entry) error {
	if !e.Upper {
		return u.Format.MakeWhiteout(dir, name)
	}
	return u.removeUpper(dir, name, e.Dir, e.NeedsWhiteout())
}

// removeUpper takes name out of the upper directory dir. With wo it
// leaves a whiteout in its place, atomically where the filesystem can
// (RENAME_WHITEOUT). Directories go through the workdir so their
// whiteouts are cleared before they disappear.
func (u *Upper) removeUpper(dir int, name string, isDir, wo bool) error {
	if !isDir && !wo {
		return unix.Unlinkat(dir, name, 0)
	}
	tmp := TempName()
	flags := uint(0)
	if wo {
		flags = unix.RENAME_WHITEOUT
	}
	err := unix.Renameat2(dir, name, u.Work, tmp, flags)
	if err != nil && wo && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EPERM)) {
		if err = unix.Renameat2(dir, name, u.Work, tmp, 0); err == nil {
			err = u.Format.MakeWhiteout(dir, name)
		}
	}
	if err != nil {
		return err
	}
	return rmtree.RemoveAt(u.Work, tmp)
}
