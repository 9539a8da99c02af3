package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/unionmount/unionmount/internal/lowerlist"
	"github.com/unionmount/unionmount/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// Mounted reports whether the container's union is mounted (in this mount
// namespace).
func (s *Store) Mounted(c *Container) bool {
	ok, _ := IsMountpoint(s.Merged(c))
	return ok
}

// Mount mounts the container's union at Merged(c) with the unionmount
// binary (which returns once the mount is up and serves it as a daemon).
// It returns whether it mounted (false: it was mounted already).
func (s *Store) Mount(c *Container) (bool, error) {
	if s.Mounted(c) {
		return false, nil
	}
	if s.opts.Unionmount == "" {
		return false, errors.New("mount: no unionmount binary: build it (make build) or pass --unionmount PATH")
	}
	args := []string{"--lower", lowerlist.Join(s.Lowers(c)), "--upper", s.Upper(c), "--workdir", s.Work(c)}
	for _, id := range c.Layers {
		if s.isLazy(id) {
			// The daemon serves the lazy layer there itself.
			mnt := s.lazyMountpoint(c, id)
			if err := os.MkdirAll(mnt, 0o700); err != nil {
				return false, fmt.Errorf("mount container %s: %w", c.Name, err)
			}
			args = append(args, "--lazy-lower", mnt+"="+s.lazyDir(id))
		}
	}
	cmd := exec.Command(s.opts.Unionmount, append(args, s.Merged(c))...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return false, fmt.Errorf("mount container %s: %s: %w: %s", c.Name, s.opts.Unionmount, err, strings.TrimSpace(out.String()))
	}
	return true, nil
}

// Unmount unmounts the container's union if it is mounted; the unionmount
// daemon then exits. A busy mount is detached.
func (s *Store) Unmount(c *Container) error {
	mnt := s.Merged(c)
	if !s.Mounted(c) {
		return nil
	}
	err := unix.Unmount(mnt, 0)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(mnt, unix.MNT_DETACH)
	}
	if err != nil && !s.Mounted(c) {
		// Unmounted in between: the unionctl that started a container
		// unmounts its union when the command exits, which rm -f races.
		return nil
	}
	if err != nil {
		if out, ferr := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); ferr != nil {
			return fmt.Errorf("unmount %s: %w (fusermount3: %s)", mnt, err, strings.TrimSpace(string(out)))
		}
	}
	s.unmountLazy(c)
	return nil
}

// unmountLazy unmounts the lazy layers the container's daemon served
// (the daemon unmounts them too as it exits, but after the union is
// gone, and Unmount returns before that): lazily, as the daemon may still
// hold them for a moment.
func (s *Store) unmountLazy(c *Container) {
	ents, _ := os.ReadDir(filepath.Join(s.containerDir(c.ID), "lazy"))
	for _, e := range ents {
		p := filepath.Join(s.containerDir(c.ID), "lazy", e.Name())
		if ok, _ := IsMountpoint(p); ok {
			unix.Unmount(p, unix.MNT_DETACH)
		}
	}
}

// IsMountpoint reports whether p is a mount point in this mount namespace.
func IsMountpoint(p string) (bool, error) {
	return mountinfo.IsMountpoint(p)
}
