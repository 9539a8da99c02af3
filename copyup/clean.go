package copyup

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// CleanWorkdir removes the leftovers of interrupted copy-ups from workFd:
// every entry whose name starts with TempPrefix, recursively, without
// following symlinks. Other entries are left alone. Run it at mount time,
// before any copy-up.
func CleanWorkdir(workFd int) error {
	names, err := readNames(workFd)
	if err != nil {
		return fmt.Errorf("clean workdir: %w", err)
	}
	var errs []error
	for _, name := range names {
		if !strings.HasPrefix(name, TempPrefix) {
			continue
		}
		if err := removeAllAt(workFd, name); err != nil {
			errs = append(errs, fmt.Errorf("clean workdir: remove %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// removeAllAt removes dirFd/name and, for a directory, everything below it,
// never following a symlink. Directories it cannot enter or change it
// makes 0700 first (as their owner), so an interrupted copy-up of a 0555
// directory is removable by an unprivileged daemon.
func removeAllAt(dirFd int, name string) error {
	err := unix.Unlinkat(dirFd, name, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR {
		return err
	}
	sub, err := openDirForRemoval(dirFd, name)
	if err != nil {
		return err
	}
	names, err := readNames(sub)
	for _, n := range names {
		if rerr := removeAllAt(sub, n); rerr != nil && err == nil {
			err = fmt.Errorf("%q: %w", n, rerr)
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

// openDirForRemoval opens dirFd/name, a directory and not a symlink to one,
// for reading, after making it 0700 so its entries can be listed and
// removed.
func openDirForRemoval(dirFd int, name string) (int, error) {
	pfd, err := unix.Openat(dirFd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	// Through the magic link this is the directory pfd holds, whatever
	// happens to name meanwhile.
	self := "/proc/self/fd/" + strconv.Itoa(pfd)
	if err := unix.Chmod(self, 0o700); err != nil && err != unix.EPERM {
		return -1, err
	}
	return unix.Open(self, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// readNames lists a directory fd (O_PATH or not) without moving its
// offset.
func readNames(dirFd int) ([]string, error) {
	fd, err := unix.Openat(dirFd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "dir")
	defer f.Close()
	return f.Readdirnames(-1)
}
