package bench

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"github.com/unionmount/unionmount/internal/lowerlist"
	"golang.org/x/sys/unix"
)

// unionmountRootless is unionmount as a user mounts it (docs/rootless.md,
// "Mounting as a user"): the daemon runs as Config.User (nobody by
// default), mounts through the setuid fusermount3 with --allow-other, and
// the workload runs as that user too, on layers that user owns. FUSE
// passthrough is refused without root, so reads and writes go through the
// daemon; markers are user.overlay.* xattrs.
//
// The host keeps /dev/fuse at 0600 and /etc/fuse.conf without
// user_allow_other (as this kind of machine has them), and unionbench
// changes neither: the daemon starts in a mount namespace of its own, made
// by root, in which a 0666 /dev/fuse and a fuse.conf with user_allow_other
// are bound, as internal/rootless.Sandbox does for the tests. The run's
// scratch directory is a shared bind mount, so the mount fusermount3 makes
// in that namespace shows at the same path here, where the workload runs.
type unionmountRootless struct{}

func init() { register(unionmountRootless{}) }

func (unionmountRootless) Name() string { return "unionmount-rootless" }

func (unionmountRootless) Version(env *Env) string { return unionmount{}.Version(env) }

func (unionmountRootless) Check(env *Env) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root to set up the user's mount namespace; run unionbench as root")
	}
	if err := needFUSE(); err != nil {
		return err
	}
	if _, err := env.unionmountBin(); err != nil {
		return err
	}
	if env.owner == nil {
		return env.ownerErr
	}
	fm, err := exec.LookPath("fusermount3")
	if err != nil {
		return errors.New("fusermount3 not found; install the fuse3 package")
	}
	if fi, err := os.Stat(fm); err != nil || fi.Mode()&os.ModeSetuid == 0 {
		return fmt.Errorf("%s is not setuid root, so a user cannot mount; reinstall fuse3", fm)
	}
	for _, tool := range []string{"unshare", "setpriv", "findmnt"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found; install util-linux", tool)
		}
	}
	// The user must reach the layers and the scratch directory.
	for p := env.data; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("user %s cannot reach the data directory: %s is mode %v; use a --data directory every user can traverse",
				env.owner.Name, p, fi.Mode().Perm())
		}
		if p == "/" {
			return nil
		}
	}
}

// rootlessSandbox runs as root in the daemon's new mount namespace, whose
// mounts are copies of ours with their propagation unchanged: $1 a 0666
// fuse device node, $2 a fuse.conf, $3 $4 the user's ids; the command
// follows. The mounts that hold /dev/fuse and /etc/fuse.conf are made
// private first, so that the binds never show outside.
const rootlessSandbox = `set -e
node=$1 conf=$2 uid=$3 gid=$4
shift 4
for p in /dev/fuse /etc/fuse.conf; do
	mount --make-private "$(findmnt -n -o TARGET --target "$p")"
done
mount --bind "$node" /dev/fuse
mount --bind "$conf" /etc/fuse.conf
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
`

func (d unionmountRootless) Mount(env *Env, st Stack, mnt string) (*Mount, error) {
	bin, err := env.unionmountBin()
	if err != nil {
		return nil, err
	}
	id := env.owner
	node, conf, err := rootlessFiles(env)
	if err != nil {
		return nil, err
	}
	for _, p := range []string{st.Upper, st.Work, mnt} {
		if err := os.Chown(p, id.UID, id.GID); err != nil {
			return nil, fmt.Errorf("%s: %w", d.Name(), err)
		}
	}
	// The directory that holds the mount point becomes a shared bind mount
	// of itself: the daemon's namespace gets a peer of it.
	share := filepath.Dir(mnt)
	if err := unix.Mount(share, share, "", unix.MS_BIND, ""); err != nil {
		return nil, fmt.Errorf("%s: bind %s: %w", d.Name(), share, err)
	}
	unshare := func() error {
		if err := unix.Unmount(share, 0); err != nil {
			return fmt.Errorf("%s: umount %s: %w", d.Name(), share, err)
		}
		return nil
	}
	if err := unix.Mount("", share, "", unix.MS_SHARED, ""); err != nil {
		unshare()
		return nil, fmt.Errorf("%s: make %s shared: %w", d.Name(), share, err)
	}
	argv := []string{"unshare", "--mount", "--propagation", "unchanged", "--", "/bin/sh", "-c", rootlessSandbox, "sh",
		node, conf, strconv.Itoa(id.UID), strconv.Itoa(id.GID),
		bin, "-f", "--allow-other", "--lower", lowerlist.Join(st.Lowers), "--upper", st.Upper, "--workdir", st.Work, mnt}
	dm, err := startDaemon(d.Name(), argv, mnt, filepath.Join(env.logs, d.Name()+".log"))
	if err != nil {
		unshare()
		return nil, err
	}
	return &Mount{Dir: mnt, daemon: dm, unmount: unshare, as: id}, nil
}

// rootlessFiles makes the device node and the fuse.conf the sandbox binds,
// in a directory only root can enter (the node opens /dev/fuse for anyone
// who reaches it).
func rootlessFiles(env *Env) (node, conf string, err error) {
	dir := filepath.Join(env.scratch, "rootless-dev")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", "", err
	}
	node, conf = filepath.Join(dir, "fuse"), filepath.Join(dir, "fuse.conf")
	var st unix.Stat_t
	if unix.Stat(node, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(10, 229) {
		os.Remove(node)
		if err := unix.Mknod(node, unix.S_IFCHR|0o666, int(unix.Mkdev(10, 229))); err != nil {
			return "", "", fmt.Errorf("mknod %s: %w", node, err)
		}
	}
	if err := os.Chmod(node, 0o666); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(conf, []byte("user_allow_other\n"), 0o644); err != nil {
		return "", "", err
	}
	return node, conf, nil
}
