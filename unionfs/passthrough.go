package unionfs

import (
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// probePassthrough asks the kernel, once the mount is up and before it is
// served, whether it lets us register backing files for FUSE passthrough,
// with a file of the upper's filesystem (an O_TMPFILE in the workdir). It
// refuses with EPERM unless we hold CAP_SYS_ADMIN in the initial user
// namespace: a user, and namespace root in a user namespace (rootless
// podman), never pass. Refused, the mount serves reads and writes itself,
// and handles keep the page cache (FOPEN_KEEP_CACHE) as a mount without
// passthrough does; go-fuse would also stop at its first refused open,
// but with the cache off for every handle opened for passthrough.
//
// Preconditions: srv is mounted and not yet serving, so nothing reads
// u.opts concurrently.
func (u *unionFS) probePassthrough(srv *fuse.Server) {
	if !u.opts.Passthrough || !u.hasUpper {
		return
	}
	fd, err := unix.Openat(u.work, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		// No O_TMPFILE on this filesystem: leave it to go-fuse.
		return
	}
	defer unix.Close(fd)
	id, errno := srv.RegisterBackingFd(&fuse.BackingMap{Fd: int32(fd)})
	if errno == 0 {
		srv.UnregisterBackingFd(id)
		return
	}
	u.opts.Passthrough = false
	if u.opts.Debug {
		u.log.Printf("FUSE passthrough refused by the kernel (%v): serving reads and writes of upper files through the daemon", errno)
	}
}
