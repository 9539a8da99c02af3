package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// kernel is Linux overlayfs, pinned to the defaults unionmount implements
// (index, redirect_dir, metacopy and xino off), as the test oracle is.
type kernel struct{}

func init() { register(kernel{}) }

// kernelOptions are the overlayfs options besides the layers.
var kernelOptions = [][2]string{{"index", "off"}, {"redirect_dir", "off"}, {"metacopy", "off"}, {"xino", "off"}}

func (kernel) Name() string { return "kernel" }

func (kernel) Version(*Env) string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return "Linux " + unix.ByteSliceToString(u.Release[:]) + " overlayfs"
}

// Check mounts a one-file overlay: the only reliable test of root, the
// module and a suitable upper filesystem.
func (k kernel) Check(env *Env) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (mount -t overlay); run unionbench as root")
	}
	if err := trialMount(env, k); err != nil {
		return fmt.Errorf("trial overlay mount failed (%w); is the overlay module available?", err)
	}
	return nil
}

// trialMount mounts a one-directory stack with d in a scratch directory
// and unmounts it: the error of the mount, or of its setup.
func trialMount(env *Env, d Driver) error {
	dir, err := os.MkdirTemp(env.scratch, "trial")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	st := Stack{Lowers: []string{filepath.Join(dir, "l")}, Upper: filepath.Join(dir, "u"), Work: filepath.Join(dir, "w")}
	for _, p := range []string{st.Lowers[0], st.Upper, st.Work, filepath.Join(dir, "m")} {
		if err := os.Mkdir(p, 0o755); err != nil {
			return err
		}
	}
	m, err := d.Mount(env, st, filepath.Join(dir, "m"))
	if err != nil {
		return err
	}
	return m.Unmount()
}

// Mount uses the new mount API so that any number of layers fits (one
// "lowerdir+" per layer, Linux 6.8+), and falls back to mount(2) with one
// option string (at most a page) on older kernels.
func (kernel) Mount(_ *Env, st Stack, mnt string) (*Mount, error) {
	err := mountOverlayFsconfig(st, mnt)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		err = mountOverlayData(st, mnt)
	}
	if err != nil {
		return nil, fmt.Errorf("kernel: mount overlay on %s: %w", mnt, err)
	}
	return &Mount{Dir: mnt, unmount: func() error {
		if err := unix.Unmount(mnt, 0); err != nil {
			return fmt.Errorf("kernel: umount %s: %w", mnt, err)
		}
		return nil
	}}, nil
}

func mountOverlayFsconfig(st Stack, mnt string) error {
	mfd, err := overlayFsmount(st, false)
	if err != nil {
		return err
	}
	defer unix.Close(mfd)
	return unix.MoveMount(mfd, "", unix.AT_FDCWD, mnt, unix.MOVE_MOUNT_F_EMPTY_PATH)
}

// overlayFsmount creates the overlay of st with the kernel drivers'
// options, detached (fsmount), and returns its mount fd. userxattr is the
// user-namespace flavour (kernel-userns): markers in user.overlay.*, and
// redirect_dir=nofollow, since userxattr refuses "off" (which follows
// redirects; the datasets hold none, so "nofollow" changes nothing).
func overlayFsmount(st Stack, userxattr bool) (int, error) {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, err
	}
	defer unix.Close(fd)
	for _, l := range st.Lowers {
		if err := unix.FsconfigSetString(fd, "lowerdir+", l); err != nil {
			return -1, fmt.Errorf("lowerdir+ %s: %w", l, err)
		}
	}
	if err := unix.FsconfigSetString(fd, "upperdir", st.Upper); err != nil {
		return -1, fmt.Errorf("upperdir: %w", err)
	}
	if err := unix.FsconfigSetString(fd, "workdir", st.Work); err != nil {
		return -1, fmt.Errorf("workdir: %w", err)
	}
	if userxattr {
		if err := unix.FsconfigSetFlag(fd, "userxattr"); err != nil {
			return -1, fmt.Errorf("userxattr: %w", err)
		}
	}
	for _, o := range kernelOptions {
		if userxattr && o[0] == "redirect_dir" {
			o[1] = "nofollow"
		}
		if err := unix.FsconfigSetString(fd, o[0], o[1]); err != nil {
			return -1, fmt.Errorf("%s=%s: %w", o[0], o[1], err)
		}
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return -1, fmt.Errorf("create: %w", err)
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("fsmount: %w", err)
	}
	return mfd, nil
}

func mountOverlayData(st Stack, mnt string) error {
	opts := []string{"lowerdir=" + strings.Join(st.Lowers, ":"), "upperdir=" + st.Upper, "workdir=" + st.Work}
	for _, o := range kernelOptions {
		opts = append(opts, o[0]+"="+o[1])
	}
	data := strings.Join(opts, ",")
	if len(data) >= os.Getpagesize() {
		return fmt.Errorf("%d layers do not fit in one page of mount options on this kernel; use shorter paths (--data) or fewer layers", len(st.Lowers))
	}
	return unix.Mount("overlay", mnt, "overlay", 0, data)
}
