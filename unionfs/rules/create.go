package rules

import (
	"github.com/unionmount/unionmount/whiteout"
	"golang.org/x/sys/unix"
)

// Slot is what the upper holds at a name a new entry is made over.
type Slot int

const (
	// Free: nothing; the entry is made in place.
	Free Slot = iota
	// CharWhiteout: the kernel's whiteout, a char 0/0 device at the name.
	// The entry replaces it in one exchange; a directory is opaque.
	CharWhiteout
	// AUFSWhiteout: a ".wh.NAME" beside the name. The entry is made in
	// place, then the marker removed; a directory is opaque.
	AUFSWhiteout
)

// Maker builds a new entry, complete with its owner and markers, at
// (at, name): the upper directory itself, or the workdir when the entry
// will replace a whiteout.
type Maker func(at int, name string) error

// CheckName refuses a name no entry may take: a ".wh." name reads back as
// a whiteout or AUFS metadata (EPERM), and a name longer than 255 bytes
// (ENAMETOOLONG).
func CheckName(name string) error {
	if whiteout.Hidden(name) {
		return unix.EPERM
	}
	if len(name) > 255 {
		return unix.ENAMETOOLONG
	}
	return nil
}

// SlotOf finds what the upper directory dir holds at name, for a new
// entry made there: EEXIST when it holds a real entry. (The caller's
// lookup has already answered EEXIST for a name a lower layer shows.)
func SlotOf(dir int, name string) (Slot, error) {
	var st unix.Stat_t
	if unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		if !whiteout.IsCharWhiteout(&st) {
			return Free, unix.EEXIST
		}
		return CharWhiteout, nil
	}
	if unix.Fstatat(dir, whiteout.Prefix+name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		return AUFSWhiteout, nil
	}
	return Free, nil
}

// Place makes a new entry name in the upper directory dir over slot s:
// make creates it. Over a char whiteout it is made in the workdir and
// swapped with the whiteout in one RENAME_EXCHANGE, as overlayfs does
// (ovl_create_over_whiteout), so a crash shows the whiteout or the new
// entry and never the lower entry in between. Over a ".wh.NAME" it is made
// in place first (a real entry hides the marker beside it), and the marker
// is removed after.
func (u *Upper) Place(dir int, name string, s Slot, make Maker) error {
	switch s {
	case CharWhiteout:
		return u.swapIn(dir, name, make)
	case AUFSWhiteout:
		if err := make(dir, name); err != nil {
			return err
		}
		return dropAUFSWhiteout(dir, name)
	}
	return make(dir, name)
}

// finishWith runs finish when there is one.
func finishWith(finish Maker, at int, name string) error {
	if finish == nil {
		return nil
	}
	return finish(at, name)
}

// Create makes the regular file name in dir over slot s, opened with
// flags (O_CREAT is added), and returns its descriptor. finish (may be
// nil) gives it its owner.
func (u *Upper) Create(dir int, name string, flags int, mode uint32, s Slot, finish Maker) (int, error) {
	fd := -1
	err := u.Place(dir, name, s, func(at int, atName string) error {
		var err error
		if fd, err = unix.Openat(at, atName, flags|unix.O_CREAT, mode&07777); err != nil {
			return err
		}
		return finishWith(finish, at, atName)
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return -1, err
	}
	return fd, nil
}

// Mkdir makes the directory name in dir over slot s. Over a whiteout it
// is opaque: rmdir then mkdir of a merged directory must not show the old
// contents again (ovl_create_over_whiteout sets opaque).
func (u *Upper) Mkdir(dir int, name string, mode uint32, s Slot, finish Maker) error {
	return u.Place(dir, name, s, func(at int, atName string) error {
		if err := unix.Mkdirat(at, atName, mode&07777); err != nil {
			return err
		}
		if s != Free {
			if err := u.SetOpaque(at, atName); err != nil {
				return err
			}
		}
		return finishWith(finish, at, atName)
	})
}

// CheckNode refuses a node no one may make in a union: a char 0/0
// device would read back as a whiteout (EPERM, as the kernel answers).
func CheckNode(mode uint32, dev int) error {
	if mode&unix.S_IFMT == unix.S_IFCHR && dev == 0 {
		return unix.EPERM
	}
	return nil
}

// Mknod makes the node name (FIFO, socket, device; mode has the type) in
// dir over slot s. A hard link is made with Place and linkat.
func (u *Upper) Mknod(dir int, name string, mode uint32, dev int, s Slot, finish Maker) error {
	if err := CheckNode(mode, dev); err != nil {
		return err
	}
	return u.Place(dir, name, s, func(at int, atName string) error {
		if err := unix.Mknodat(at, atName, mode, dev); err != nil {
			return err
		}
		return finishWith(finish, at, atName)
	})
}

// Symlink makes the symlink name -> target in dir over slot s.
func (u *Upper) Symlink(dir int, target, name string, s Slot, finish Maker) error {
	return u.Place(dir, name, s, func(at int, atName string) error {
		if err := unix.Symlinkat(target, at, atName); err != nil {
			return err
		}
		return finishWith(finish, at, atName)
	})
}
