package copyup

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/unionmount/unionmount/internal/rmtree"
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
		if err := rmtree.RemoveAt(workFd, name); err != nil {
			errs = append(errs, fmt.Errorf("clean workdir: remove %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
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
