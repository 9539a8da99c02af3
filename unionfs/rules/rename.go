package rules

import (
	"github.com/unionmount/unionmount/internal/dirent"
	"github.com/unionmount/unionmount/whiteout"
	"golang.org/x/sys/unix"
)

// CheckRenameArgs refuses what rename refuses before it looks at any
// name: flags other than RENAME_NOREPLACE and RENAME_EXCHANGE (EINVAL;
// ovl_rename refuses RENAME_WHITEOUT too), and a new name no entry may take
// (CheckName).
func CheckRenameArgs(flags uint32, newName string) error {
	if flags&^uint32(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return unix.EINVAL
	}
	return CheckName(newName)
}

// CheckRename decides whether src may be renamed over dst (nil: the new
// name is free), in the kernel's order: ENOENT for an exchange with
// nothing, EEXIST with RENAME_NOREPLACE, EXDEV for a directory that has a
// lower part (redirect_dir=off), ENOTDIR and EISDIR for mismatched types,
// ENOTEMPTY for a target directory whose merged listing is not empty
// (dstEmpty is asked only then).
func CheckRename(src Entry, dst *Entry, flags uint32, dstEmpty func() (bool, error)) error {
	exchange := flags&unix.RENAME_EXCHANGE != 0
	if exchange && dst == nil {
		return unix.ENOENT
	}
	if flags&unix.RENAME_NOREPLACE != 0 && dst != nil {
		return unix.EEXIST
	}
	if !src.Movable() {
		return unix.EXDEV
	}
	if exchange && !dst.Movable() {
		return unix.EXDEV
	}
	if dst != nil && !exchange {
		if src.Dir && !dst.Dir {
			return unix.ENOTDIR
		}
		if !src.Dir && dst.Dir {
			return unix.EISDIR
		}
		if dst.Dir {
			ok, err := dstEmpty()
			if err != nil {
				return err
			}
			if !ok {
				return unix.ENOTEMPTY
			}
		}
	}
	return nil
}

// Move is one rename as the upper sees it, after CheckRename passed and
// the caller copied up what moves (and, for an exchange, the target).
type Move struct {
	// Exchange: RENAME_EXCHANGE.
	Exchange bool
	// Src is the entry that moves; Src.Lower leaves a whiteout at its
	// old name.
	Src Entry
	// Dst is the entry at the new name, when there is one (an exchange
	// moves it to the old name).
	Dst Entry
	// SrcParentMerged and DstParentMerged: the old and new parent
	// directories have a lower part. A directory moved into such a
	// parent is marked opaque.
	SrcParentMerged, DstParentMerged bool
}

// Rename moves name of the upper directory sdir to newName of ddir, as
// ovl_rename does with redirect_dir=off. Each change of the upper is one
// step that a crash leaves before or after:
//
//   - A directory moving into a merged parent is marked opaque first,
//     where it stands: it is upper-only (CheckRename), so the marker
//     changes nothing there, and at its new place it never merges with
//     a lower directory of that name.
//   - An exchange is one RENAME_EXCHANGE.
//   - A char whiteout at the target is replaced by the entry; a directory
//     cannot be renamed over a device, so it is exchanged with the
//     whiteout, which then stays at the old name when a lower layer shows
//     it and is removed otherwise.
//   - An upper target directory empty in the union but holding whiteouts
//     is swapped for an empty opaque copy first (ovl_clear_empty).
//   - The move itself leaves a whiteout at the old name when Src.Lower
//     (RENAME_WHITEOUT, or a rename and a whiteout where the filesystem
//     refuses the flag).
//   - A ".wh.NEWNAME" marker beside the target goes last: the new entry
//     hides it already.
func (u *Upper) Rename(sdir int, name string, ddir int, newName string, m Move) error {
	if m.Src.Dir && m.DstParentMerged {
		if err := u.SetOpaque(sdir, name); err != nil {
			return err
		}
	}
	if m.Exchange {
		if m.Dst.Dir && m.SrcParentMerged {
			if err := u.SetOpaque(ddir, newName); err != nil {
				return err
			}
		}
		return unix.Renameat2(sdir, name, ddir, newName, unix.RENAME_EXCHANGE)
	}

	var st unix.Stat_t
	if unix.Fstatat(ddir, newName, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		switch {
		case whiteout.IsCharWhiteout(&st) && m.Src.Dir:
			if err := unix.Renameat2(sdir, name, ddir, newName, unix.RENAME_EXCHANGE); err != nil {
				return err
			}
			if !m.Src.Lower {
				if err := unix.Unlinkat(sdir, name, 0); err != nil {
					u.logf("rename: remove the whiteout left at %q: %v", name, err)
				}
			}
			dropAUFSWhiteout(ddir, newName) // done: the rename stands either way
			return nil
		case st.Mode&unix.S_IFMT == unix.S_IFDIR:
			if err := u.clearUpperDir(ddir, newName, &st); err != nil {
				return err
			}
		}
	}

	rflags := uint(0)
	if m.Src.Lower {
		rflags = unix.RENAME_WHITEOUT
	}
	err := unix.Renameat2(sdir, name, ddir, newName, rflags)
	if err != nil && m.Src.Lower && (err == unix.EINVAL || err == unix.EPERM) {
		if err = unix.Renameat2(sdir, name, ddir, newName, 0); err == nil {
			err = u.Format.MakeWhiteout(sdir, name)
		}
	}
	if err != nil {
		return err
	}
	dropAUFSWhiteout(ddir, newName) // done: the rename stands either way
	return nil
}

// clearUpperDir replaces the upper directory dir/name, empty in the
// merged view but maybe holding whiteouts, by an empty opaque directory
// with its mode and owner (swapIn). A directory already empty on disk is
// left as it is.
func (u *Upper) clearUpperDir(dir int, name string, st *unix.Stat_t) error {
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	empty := true
	err = dirent.Read(fd, func(dirent.Entry) { empty = false })
	unix.Close(fd)
	if err != nil || empty {
		return err
	}
	return u.swapIn(dir, name, func(at int, atName string) error {
		if err := unix.Mkdirat(at, atName, st.Mode&07777); err != nil {
			return err
		}
		if err := unix.Fchownat(at, atName, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		if err := unix.Fchmodat(at, atName, st.Mode&07777, 0); err != nil {
			return err
		}
		return u.SetOpaque(at, atName)
	})
}
