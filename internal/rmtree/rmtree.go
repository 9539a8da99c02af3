// Package rmtree removes directory trees relative to a directory the
// caller holds open, as a daemon cleans its workdir: never following a
// symlink, and able to remove what a user made unwritable.
//
// The behaviour, and why:
//   - A symlink is removed, never followed, at any depth: a tree in a
//     workdir came from users of the mount.
//   - A directory is made 0700 before it is read and emptied, through a
//     descriptor and never by name, so a directory its owner made 0555 or
//     0000 (kept as is by a copy-up or a rename into the workdir) is
//     removable by an unprivileged daemon too. The tree is going away, so
//     the mode does not matter afterwards.
//   - A failure to remove one entry does not stop the others: as much as
//     can go goes, and the first error is returned, naming its path.
//   - An entry already gone, at the top or below, is not an error.
//   - Only EISDIR from unlinkat means "a directory". EPERM does not: Linux
//     returns it for an append-only, immutable or sticky-protected entry
//     or one whose owner is not mapped, and rmdir would fail the same way
//     after emptying the directory.
package rmtree

import (
	"fmt"
	"strconv"

	"github.com/unionmount/unionmount/internal/dirent"
	"golang.org/x/sys/unix"
)

// RemoveAt removes name in the directory dirFd and, if it is a directory,
// everything below it.
func RemoveAt(dirFd int, name string) error {
	err := unix.Unlinkat(dirFd, name, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR {
		return err
	}
	sub, err := openForRemoval(dirFd, name)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return err
	}
	ents, err := dirent.ReadAll(sub)
	for _, e := range ents {
		if rerr := RemoveAt(sub, e.Name); rerr != nil && err == nil {
			err = fmt.Errorf("%q: %w", e.Name, rerr)
		}
	}
	unix.Close(sub)
	if err != nil {
		return err
	}
	err = unix.Unlinkat(dirFd, name, unix.AT_REMOVEDIR)
	if err == unix.ENOENT {
		return nil
	}
	return err
}

// openForRemoval opens dirFd/name, a directory and not a symlink to one,
// for reading, and makes it 0700 so that its entries can be listed and
// removed. A directory that cannot be read yet is reached through an
// O_PATH descriptor and its /proc/self/fd link, which is that directory
// whatever happens to name meanwhile.
func openForRemoval(dirFd int, name string) (int, error) {
	const flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC
	fd, err := unix.Openat(dirFd, name, flags|unix.O_NOFOLLOW, 0)
	if err == nil {
		if err := unix.Fchmod(fd, 0o700); err != nil && err != unix.EPERM {
			unix.Close(fd)
			return -1, err
		}
		return fd, nil
	}
	if err != unix.EACCES {
		return -1, err
	}
	pfd, err := unix.Openat(dirFd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	self := "/proc/self/fd/" + strconv.Itoa(pfd)
	if err := unix.Chmod(self, 0o700); err != nil {
		return -1, err
	}
	return unix.Open(self, flags, 0)
}
