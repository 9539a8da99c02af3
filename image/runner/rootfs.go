package runner

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// setupRoot prepares the mounts of the container and pivots into it.
// Called in the new mount namespace, as (namespace) root.
func setupRoot(spec *Spec) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	root := spec.Rootfs
	if err := mountIn(root, "proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "", true); err != nil {
		return err
	}
	if err := setupDev(root); err != nil {
		return err
	}
	// /sys: the host's, read-only (a new sysfs needs a network namespace
	// of our own). Best effort: a container runs without it.
	if err := mountIn(root, "/sys", "/sys", "", unix.MS_BIND|unix.MS_REC, "", true); err == nil {
		remountReadOnly(root, "/sys")
	}
	for _, m := range spec.Mounts {
		if err := bindVolume(root, m); err != nil {
			return err
		}
	}
	if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
		return fmt.Errorf("set hostname: %w", err)
	}
	return pivot(root)
}

// openInRoot opens dst (a path in the container) as O_PATH with every
// symlink resolved inside root. With create, missing directories are made
// (and a missing last component as a directory, or as a file if file).
func openInRoot(root, dst string, create, file bool) (int, error) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open container root: %w", err)
	}
	defer unix.Close(rfd)
	rel := strings.TrimPrefix(path.Clean("/"+dst), "/")
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	fd, err := unix.Openat2(rfd, rel, how)
	if err == nil || !create || !errors.Is(err, unix.ENOENT) {
		if err != nil {
			return -1, fmt.Errorf("mount point %s: %w", dst, err)
		}
		return fd, nil
	}
	// Create the missing part through the root: os.Root refuses to leave it.
	r, rerr := os.OpenRoot(root)
	if rerr != nil {
		return -1, fmt.Errorf("mount point %s: %w", dst, rerr)
	}
	defer r.Close()
	if file {
		if dir := path.Dir(rel); dir != "." {
			if err := r.MkdirAll(dir, 0o755); err != nil {
				return -1, fmt.Errorf("mount point %s: %w", dst, err)
			}
		}
		f, err := r.OpenFile(rel, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return -1, fmt.Errorf("mount point %s: %w", dst, err)
		}
		f.Close()
	} else if err := r.MkdirAll(rel, 0o755); err != nil {
		return -1, fmt.Errorf("mount point %s: %w", dst, err)
	}
	fd, err = unix.Openat2(rfd, rel, how)
	if err != nil {
		return -1, fmt.Errorf("mount point %s: %w", dst, err)
	}
	return fd, nil
}

func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// mountIn mounts source at dst inside root.
func mountIn(root, source, dst, fstype string, flags uintptr, data string, create bool) error {
	file := false
	if flags&unix.MS_BIND != 0 {
		if st, err := os.Stat(source); err == nil && !st.IsDir() {
			file = true
		}
	}
	fd, err := openInRoot(root, dst, create, file)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Mount(source, fdPath(fd), fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", source, dst, err)
	}
	return nil
}

func remountReadOnly(root, dst string) error {
	fd, err := openInRoot(root, dst, false, false)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var sfs unix.Statfs_t
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY)
	if unix.Statfs(fdPath(fd), &sfs) == nil {
		// Locked flags (nosuid, nodev, noexec) must be kept in a user
		// namespace.
		for _, f := range []struct{ st, ms uintptr }{
			{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOEXEC, unix.MS_NOEXEC},
		} {
			if uintptr(sfs.Flags)&f.st != 0 {
				flags |= f.ms
			}
		}
	}
	if err := unix.Mount("", fdPath(fd), "", flags, ""); err != nil {
		return fmt.Errorf("remount %s read-only: %w", dst, err)
	}
	return nil
}

// setupDev mounts a tmpfs on /dev with the usual devices bound in from
// the host (mknod is not allowed in a user namespace), devpts and shm.
func setupDev(root string) error {
	if err := mountIn(root, "tmpfs", "/dev", "tmpfs", unix.MS_NOSUID|unix.MS_STRICTATIME, "mode=755,size=65536k", true); err != nil {
		return err
	}
	for _, d := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		if err := mountIn(root, "/dev/"+d, "/dev/"+d, "", unix.MS_BIND, "", true); err != nil {
			return err
		}
	}
	if err := mountIn(root, "devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC,
		"newinstance,ptmxmode=0666,mode=0620", true); err != nil {
		return err
	}
	if err := mountIn(root, "shm", "/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC,
		"mode=1777,size=65536k", true); err != nil {
		return err
	}
	links := map[string]string{
		"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
		"stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx", "core": "/proc/kcore",
	}
	fd, err := openInRoot(root, "/dev", false, false)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev: %w", err)
	}
	defer unix.Close(dfd)
	for name, target := range links {
		if err := unix.Symlinkat(target, dfd, name); err != nil {
			return fmt.Errorf("/dev/%s: %w", name, err)
		}
	}
	return nil
}

func bindVolume(root string, m Mount) error {
	if err := mountIn(root, m.Source, m.Destination, "", unix.MS_BIND|unix.MS_REC, "", true); err != nil {
		return fmt.Errorf("volume %s: %w", m.Destination, err)
	}
	if m.ReadOnly {
		if err := remountReadOnly(root, m.Destination); err != nil {
			return fmt.Errorf("volume %s: %w", m.Destination, err)
		}
	}
	return nil
}

// pivot makes root the root of the mount namespace and drops the old one
// (pivot_root(".", ".") then a lazy unmount, as runc does: no directory
// for the old root is needed).
func pivot(root string) error {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open root: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Fchdir(fd); err != nil {
		return fmt.Errorf("chdir root: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	return unix.Chdir("/")
}
