package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/unionfs"
)

// What a host needs for a mount, checked before mounting so that a missing
// piece is reported with its fix rather than as go-fuse's "fusermount
// exited with code 256" (the helper's own message goes to the daemon's
// stderr, which is /dev/null). docs/rootless.md lists the same messages
// beside what the user sees without them; keep the two in step.
//
//   - /dev/fuse opens read-write: mode 0666 for a user or a user namespace
//     (udev's default; some machines make it 0600).
//   - A non-root user in the initial namespaces mounts through the setuid
//     fusermount3, and needs user_allow_other in /etc/fuse.conf for
//     allow_other.
//   - A namespace root mounts with mount(2), which the kernel allows only
//     when its user namespace owns the mount namespace (unshare -Urm).

// Messages of checkHost. The wording is tested and documented.
const (
	msgFuseDenied = "cannot open /dev/fuse (permission denied): make it mode 0666 so that users and user namespaces can mount " +
		"(as root: chmod 0666 /dev/fuse; to keep it across reboots, a udev rule: KERNEL==\"fuse\", MODE=\"0666\")"
	msgFuseDeniedRoot = "cannot open /dev/fuse (permission denied) although running as root: a device cgroup or " +
		"security policy refuses it; in a container, pass the device in (--device /dev/fuse)"
	msgFuseMissing = "cannot open /dev/fuse (no such file): load the FUSE module (modprobe fuse); " +
		"in a container, pass the device in (--device /dev/fuse)"
	msgFuseNoDevice    = "cannot open /dev/fuse (no such device): load the FUSE module (modprobe fuse)"
	msgNoFusermount    = "fusermount3 not found in PATH or /bin: a non-root user mounts through this setuid helper; install it (apt-get install fuse3)"
	msgNotSetuid       = "%s is not setuid root (mode %v, owner uid %d): a non-root user mounts through it; as root, chmod u+s %s (or reinstall fuse3)"
	msgUserAllowOther  = "allow_other as a non-root user needs user_allow_other in /etc/fuse.conf: add that line (as root), or mount without --allow-other / -o allow_other"
	msgMountNSNotOwned = "mount(2) is refused here: this user namespace does not own the mount namespace; " +
		"run unionmount in a new mount namespace as well (unshare --user --map-root-user --mount, or unshare -Urm)"
)

// hostProbe is what checkHost learns from the machine; tests fake it.
type hostProbe struct {
	// openFuse opens /dev/fuse read-write and closes it again.
	openFuse func() error
	// fusermount finds the helper go-fuse runs (fusermount3 in PATH, then
	// /bin/fusermount3, then fusermount) and stats it.
	fusermount func() (string, fs.FileInfo, error)
	// fuseConf reads /etc/fuse.conf.
	fuseConf func() ([]byte, error)
	// ownsMountNS reports whether our user namespace owns our mount
	// namespace.
	ownsMountNS func() (bool, error)
}

func realHost() hostProbe {
	return hostProbe{
		openFuse: func() error {
			fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err == nil {
				unix.Close(fd)
			}
			return err
		},
		fusermount: func() (string, fs.FileInfo, error) {
			for _, name := range []string{"fusermount3", "/bin/fusermount3", "fusermount", "/bin/fusermount"} {
				p, err := exec.LookPath(name)
				if err != nil {
					continue
				}
				fi, err := os.Stat(p)
				return p, fi, err
			}
			return "", nil, fs.ErrNotExist
		},
		fuseConf:    func() ([]byte, error) { return os.ReadFile("/etc/fuse.conf") },
		ownsMountNS: ownsMountNamespace,
	}
}

// checkHost reports the first thing the host lacks for mounting with opts
// as euid (in a user namespace or not), as an error that names the fix.
func checkHost(opts *unionfs.Options, euid int, inUserNS bool, h hostProbe) error {
	if err := h.openFuse(); err != nil {
		switch {
		case errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM):
			if euid == 0 && !inUserNS {
				return errors.New(msgFuseDeniedRoot)
			}
			return errors.New(msgFuseDenied)
		case errors.Is(err, unix.ENOENT):
			return errors.New(msgFuseMissing)
		case errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO):
			return errors.New(msgFuseNoDevice)
		default:
			return fmt.Errorf("cannot open /dev/fuse: %w", err)
		}
	}
	if euid == 0 {
		if inUserNS {
			if owned, err := h.ownsMountNS(); err == nil && !owned {
				return errors.New(msgMountNSNotOwned)
			}
		}
		return nil
	}
	p, fi, err := h.fusermount()
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return errors.New(msgNoFusermount)
		}
		return fmt.Errorf("look for fusermount3: %w", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && (fi.Mode()&fs.ModeSetuid == 0 || st.Uid != 0) {
		return fmt.Errorf(msgNotSetuid, p, fi.Mode(), st.Uid, p)
	}
	if opts.AllowOther {
		conf, err := h.fuseConf()
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("read /etc/fuse.conf: %w", err)
		}
		if !hasUserAllowOther(conf) {
			return errors.New(msgUserAllowOther)
		}
	}
	return nil
}

// hasUserAllowOther reports whether fuse.conf enables user_allow_other: a
// line of its own, blanks around it allowed, as fusermount3 reads it.
func hasUserAllowOther(conf []byte) bool {
	sc := bufio.NewScanner(bytes.NewReader(conf))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "user_allow_other" {
			return true
		}
	}
	return false
}

// ownsMountNamespace asks the kernel (NS_GET_USERNS) which user namespace
// owns our mount namespace and compares it with ours.
func ownsMountNamespace() (bool, error) {
	mnt, err := unix.Open("/proc/self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(mnt)
	owner, err := unix.IoctlRetInt(mnt, unix.NS_GET_USERNS)
	if errors.Is(err, unix.EPERM) {
		return false, nil // owned by an ancestor of our user namespace
	}
	if err != nil {
		return false, err
	}
	defer unix.Close(owner)
	var a, b unix.Stat_t
	if err := unix.Fstat(owner, &a); err != nil {
		return false, err
	}
	if err := unix.Stat("/proc/self/ns/user", &b); err != nil {
		return false, err
	}
	return a.Dev == b.Dev && a.Ino == b.Ino, nil
}

// explainMountError adds what to do to go-fuse's bare report that the
// fusermount3 helper failed: the helper printed the reason on a stderr the
// daemon does not have.
func explainMountError(err error) error {
	if err != nil && strings.Contains(err.Error(), "fusermount exited with code") {
		return &hintError{err, "fusermount3 printed the reason: run unionmount with -f to see it"}
	}
	return err
}

// hintError is an error with advice appended.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return strings.TrimSpace(e.err.Error()) + "; " + e.hint }
func (e *hintError) Unwrap() error { return e.err }
