package bench

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// kernelUserns is Linux overlayfs mounted by the root of a user namespace,
// as rootless podman's kernel overlay driver mounts it: the superblock
// belongs to that namespace, markers are user.overlay.* (userxattr), and
// the upper is written with the namespace root's credentials. The other
// options are the kernel driver's, but redirect_dir=nofollow.
//
// The mount is made by a child of unionbench (itself, re-executed) in a
// new user and mount namespace, which maps ids 0-65535 to the same host
// ids so that the datasets' owners and chown's 1000 are mapped. The child
// creates the mount detached (fsmount) and sends its file descriptor back
// over a socket; unionbench attaches it to the mount point in its own
// namespace, where the workload runs as for the kernel driver. A mount
// made in the child's namespace could not be reached from here otherwise.
type kernelUserns struct{}

// OptIn: it costs what kernel costs and measures what kernel measures
// (the same overlayfs, another superblock owner); the default set must
// stay inside make bench's 15 minutes.
func (kernelUserns) OptIn() string {
	return "opt-in (the kernel driver's figures with another superblock owner): run it with --drivers kernel-userns,..."
}

func init() {
	register(kernelUserns{})
	if len(os.Args) > 1 && os.Args[1] == usernsHelper {
		os.Exit(usernsMountChild(os.Args[2:]))
	}
}

// usernsHelper is the first argument that makes this program the child
// that mounts in a user namespace (see kernelUserns).
const usernsHelper = "__unionbench-userns-overlay"

func (kernelUserns) Name() string { return "kernel-userns" }

func (kernelUserns) Version(env *Env) string {
	return kernel{}.Version(env) + " in a user namespace (userxattr)"
}

func (k kernelUserns) Check(env *Env) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root to map ids into the user namespace; run unionbench as root")
	}
	if err := trialMount(env, k); err != nil {
		return fmt.Errorf("trial mount failed (%w); the kernel needs overlayfs mounts in user namespaces (Linux 5.11+) and the new mount API", err)
	}
	return nil
}

func (kernelUserns) Mount(_ *Env, st Stack, mnt string) (*Mount, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("kernel-userns: %w", err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("kernel-userns: socketpair: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "mount-fd"), os.NewFile(uintptr(fds[1]), "mount-fd-child")
	defer ours.Close()

	args := []string{usernsHelper, "upperdir=" + st.Upper, "workdir=" + st.Work}
	for _, l := range st.Lowers {
		args = append(args, "lowerdir+="+l)
	}
	cmd := exec.Command(self, args...)
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	ids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 65536}}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: ids, GidMappings: ids, GidMappingsEnableSetgroups: true,
	}
	out, err := cmd.CombinedOutput()
	theirs.Close()
	if err != nil {
		return nil, fmt.Errorf("kernel-userns: mount in a user namespace: %v: %s", err, strings.TrimSpace(string(out)))
	}
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(int(ours.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("kernel-userns: receive the mount: %w", err)
	}
	mfd, err := mountFd(oob[:oobn])
	if err != nil {
		return nil, fmt.Errorf("kernel-userns: receive the mount: %w", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, mnt, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return nil, fmt.Errorf("kernel-userns: attach the mount on %s: %w", mnt, err)
	}
	return &Mount{Dir: mnt, unmount: func() error {
		if err := unix.Unmount(mnt, 0); err != nil {
			return fmt.Errorf("kernel-userns: umount %s: %w", mnt, err)
		}
		return nil
	}}, nil
}

// mountFd takes the one file descriptor out of a control message.
func mountFd(oob []byte) (int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return -1, err
	}
	for _, m := range msgs {
		if fds, err := unix.ParseUnixRights(&m); err == nil && len(fds) == 1 {
			return fds[0], nil
		}
	}
	return -1, errors.New("no file descriptor in the reply")
}

// usernsMountChild runs in the new user and mount namespaces, as their
// root: it creates the overlay detached from any mount namespace and sends
// it to the parent over fd 3. args are KEY=VALUE overlay options (lowerdir+
// repeated, topmost first). It returns the exit status.
func usernsMountChild(args []string) int {
	var st Stack
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "lowerdir+":
			st.Lowers = append(st.Lowers, v)
		case "upperdir":
			st.Upper = v
		case "workdir":
			st.Work = v
		default:
			fmt.Fprintf(os.Stderr, "overlay option %s: unknown\n", a)
			return 1
		}
	}
	mfd, err := overlayFsmount(st, true)
	if err == nil {
		err = unix.Sendmsg(3, []byte{0}, unix.UnixRights(mfd), nil, 0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "overlay in a user namespace: %v\n", err)
		return 1
	}
	return 0
}
