package fstest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/lowerlist"
	"github.com/unionmount/unionmount/internal/mountinfo"
	"github.com/unionmount/unionmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// mountWait bounds how long a mount may take to appear; exitWait how long a
// daemon may take to exit after its unmount (a variable for tests).
const mountWait = 10 * time.Second

var exitWait = 10 * time.Second

// Skipf skips the test with the reason, or fails it with the same reason
// when CI=true (testenv.Skipf, which packages fstest imports use directly):
// for a missing root, tool, package, kernel feature, module or device.
func Skipf(t testing.TB, format string, args ...any) {
	t.Helper()
	testenv.Skipf(t, format, args...)
}

// RequireRoot skips the test (fails it under CI=true) unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skipf(t, "needs root (euid is %d): run the tests as root", os.Geteuid())
	}
}

// RequireFUSE skips the test (fails it under CI=true) unless it runs as
// root and /dev/fuse can be opened.
func RequireFUSE(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		testenv.Skipf(t, "needs FUSE: %v (install fuse3 and load the fuse module)", err)
	}
	f.Close()
}

// RequireOverlay skips the test (fails it under CI=true) unless it runs as
// root and the kernel knows the overlay filesystem.
func RequireOverlay(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		testenv.Skipf(t, "needs overlayfs: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == "overlay" {
			return
		}
	}
	testenv.Skipf(t, "needs overlayfs: not in /proc/filesystems (modprobe overlay)")
}

// KernelOptions are the overlayfs options the oracle is pinned to: the
// kernel's defaults with the features unionmount does not implement off.
const KernelOptions = "index=off,redirect_dir=off,metacopy=off,xino=off"

// kernelOptions returns KernelOptions plus extra. With userxattr the kernel
// refuses any redirect_dir but nofollow, which is also what unionmount does
// (it neither writes nor follows redirects).
func kernelOptions(extra []string) []string {
	opts := strings.Split(KernelOptions, ",")
	if slices.Contains(extra, "userxattr") {
		for i, o := range opts {
			if strings.HasPrefix(o, "redirect_dir=") {
				opts[i] = "redirect_dir=nofollow"
			}
		}
	}
	return append(opts, extra...)
}

// KernelMount is a kernel overlayfs mount made by MountKernelOverlay.
type KernelMount struct {
	Mnt     string
	Options string // the mount data, for logs

	t    testing.TB
	once sync.Once
	err  error
}

// MountKernelOverlay mounts kernel overlayfs at mnt over lowers (topmost
// first), with upper and work unless upper is "", pinned to KernelOptions
// plus extra options (e.g. "userxattr"). The kernel refuses a single lower
// without an upper, so one is given an empty second lower under it: that
// makes the root a merged directory and changes nothing else. The mount is
// undone at cleanup.
func MountKernelOverlay(t testing.TB, lowers []string, upper, work, mnt string, extra ...string) *KernelMount {
	t.Helper()
	RequireOverlay(t)
	if len(lowers) == 0 {
		t.Fatal("mount kernel overlay: no lower layer")
	}
	if upper == "" && len(lowers) == 1 {
		lowers = append(append([]string(nil), lowers...), t.TempDir())
	}
	opts := "lowerdir=" + lowerlist.Join(lowers)
	if upper != "" {
		opts += ",upperdir=" + lowerlist.Escape(upper) + ",workdir=" + lowerlist.Escape(work)
	}
	fixed := kernelOptions(extra)
	opts += "," + strings.Join(fixed, ",")
	var err error
	if len(opts) < 4000 {
		err = unix.Mount("overlay", mnt, "overlay", 0, opts)
	} else {
		// mount(2) takes at most a page of options: use fsconfig's
		// lowerdir+ (Linux 6.8+), one unescaped path per call.
		err = mountOverlayFsconfig(lowers, upper, work, mnt, fixed)
	}
	if err != nil {
		shown := opts
		if len(shown) > 600 {
			shown = fmt.Sprintf("%s... (%d bytes)", shown[:600], len(shown))
		}
		t.Fatalf("mount kernel overlay at %s: %v (options %s)", mnt, err, shown)
	}
	k := &KernelMount{Mnt: mnt, Options: opts, t: t}
	t.Cleanup(func() {
		if err := k.Unmount(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return k
}

// Unmount unmounts the overlay now (a lazy unmount if it is busy). Later
// calls and the cleanup do nothing more.
func (k *KernelMount) Unmount() error {
	k.once.Do(func() {
		err := unix.Unmount(k.Mnt, 0)
		if errors.Is(err, unix.EBUSY) {
			err = unix.Unmount(k.Mnt, unix.MNT_DETACH)
			if err == nil {
				err = fmt.Errorf("was busy, detached")
			}
		}
		if err != nil {
			k.err = fmt.Errorf("unmount kernel overlay %s: %w", k.Mnt, err)
		}
	})
	return k.err
}

func mountOverlayFsconfig(lowers []string, upper, work, mnt string, opts []string) error {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen: %w", err)
	}
	defer unix.Close(fd)
	set := func(k, v string) error {
		if err := unix.FsconfigSetString(fd, k, v); err != nil {
			return fmt.Errorf("fsconfig %s=%s: %w", k, v, err)
		}
		return nil
	}
	for _, l := range lowers {
		if err := set("lowerdir+", l); err != nil {
			return err
		}
	}
	if upper != "" {
		if err := set("upperdir", upper); err != nil {
			return err
		}
		if err := set("workdir", work); err != nil {
			return err
		}
	}
	for _, o := range opts {
		k, v, hasValue := strings.Cut(o, "=")
		if !hasValue {
			if err := unix.FsconfigSetFlag(fd, k); err != nil {
				return fmt.Errorf("fsconfig %s: %w", k, err)
			}
			continue
		}
		if err := set(k, v); err != nil {
			return err
		}
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fmt.Errorf("fsconfig create: %w", err)
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fsmount: %w", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, mnt, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move mount: %w", err)
	}
	return nil
}

var build struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// Binary returns the path of a unionmount binary: $UNIONMOUNT_BIN when set,
// else ./cmd/unionmount built once per test process into a temporary
// directory (with -race when the tests run with -race). A build failure
// fails the test with the compiler's output.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("UNIONMOUNT_BIN"); p != "" {
		return p
	}
	build.once.Do(func() {
		root, err := ModuleRoot()
		if err != nil {
			build.err = err
			return
		}
		sweepStaleBuilds()
		dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", buildDirPrefix, os.Getpid()))
		if err != nil {
			build.err = fmt.Errorf("build unionmount: %w", err)
			return
		}
		build.dir = dir
		out := filepath.Join(dir, "unionmount")
		args := []string{"build", "-o", out}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/unionmount")...)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build ./cmd/unionmount: %w\n%s", err, b)
			return
		}
		build.path = out
	})
	if build.err != nil {
		t.Fatalf("%v", build.err)
	}
	return build.path
}

// buildDirPrefix starts the name of Binary's build directories, which go on
// with the building process's pid.
const buildDirPrefix = "unionmount-test-bin-"

// sweepStaleBuilds removes the build directories of test processes that
// are gone, so that packages without a TestMain calling RemoveBinary leave
// at most one binary behind.
func sweepStaleBuilds() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), buildDirPrefix+"*"))
	for _, d := range dirs {
		var pid int
		if _, err := fmt.Sscanf(strings.TrimPrefix(filepath.Base(d), buildDirPrefix), "%d-", &pid); err != nil || pid <= 0 {
			continue
		}
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			os.RemoveAll(d)
		}
	}
}

// RemoveBinary deletes the binary Binary built, if any. Call it from
// TestMain after m.Run; without it the directory stays until a later test
// process sweeps it.
func RemoveBinary() {
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
}

// ModuleRoot returns the directory of the main module's go.mod: from
// `go env GOMOD`, else found by walking up from the working directory.
func ModuleRoot() (string, error) {
	if b, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
		if p := strings.TrimSpace(string(b)); p != "" && p != os.DevNull {
			return filepath.Dir(p), nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find module root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// URingEnv names the environment variable that makes the test helpers
// mount unionmount with `--uring MODE` (off, auto, on): how `make
// test-uring` runs the mounting packages a second time over FUSE over
// io_uring.
const URingEnv = "UNIONMOUNT_TEST_URING"

// URingArgs returns the unionmount arguments that $UNIONMOUNT_TEST_URING
// asks for: none when it is unset.
func URingArgs() []string {
	if m := os.Getenv(URingEnv); m != "" {
		return []string{"--uring", m}
	}
	return nil
}

// Union is a unionmount daemon serving a mount, started by MountUnion.
type Union struct {
	Mnt string
	Cmd *exec.Cmd
	Pid int

	out    *syncBuffer
	done   chan struct{} // closed when the process has exited
	status error         // cmd.Wait's result, valid after done

	dev string // the mount's major:minor, which names the FUSE connection

	mu       sync.Mutex
	killed   bool   // the exit status is not expected to be 0
	reported bool   // the output is already in the test log
	note     string // what the cleanup should log
	unmounts sync.Once
	err      error
}

// MountUnion runs the unionmount binary in the foreground with
// `-f --timeout 0 --lower L [--upper U --workdir W] [args] mnt`, waits until
// the mount shows in /proc/self/mountinfo, and registers a cleanup that
// unmounts with fusermount3 -u (umount -l if that fails) and checks that the
// daemon exited 0. The daemon's output goes to the test log if the test
// fails.
func MountUnion(t testing.TB, lowers []string, upper, work, mnt string, args ...string) *Union {
	t.Helper()
	RequireFUSE(t)
	bin := Binary(t)
	argv := []string{"-f", "--timeout", "0", "--lower", lowerlist.Join(lowers)}
	argv = append(argv, URingArgs()...)
	if upper != "" {
		argv = append(argv, "--upper", upper, "--workdir", work)
	}
	argv = append(argv, args...)
	argv = append(argv, mnt)

	abs, err := canonical(mnt)
	if err != nil {
		t.Fatalf("mount unionmount: %v", err)
	}
	before, err := mountsAt(abs)
	if err != nil {
		t.Fatalf("mount unionmount: %v", err)
	}
	u := &Union{Mnt: mnt, out: &syncBuffer{}, done: make(chan struct{})}
	u.Cmd = exec.Command(bin, argv...)
	u.Cmd.Stdout = u.out
	u.Cmd.Stderr = u.out
	if err := u.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	u.Pid = u.Cmd.Process.Pid
	go func() {
		u.status = u.Cmd.Wait()
		close(u.done)
	}()
	t.Cleanup(func() {
		if err := u.Unmount(); err != nil {
			t.Errorf("%v", err)
		}
		u.mu.Lock()
		reported, note := u.reported, u.note
		u.mu.Unlock()
		if note != "" {
			t.Log(note)
		}
		if t.Failed() && !reported {
			t.Logf("unionmount %s output:\n%s", strings.Join(argv, " "), u.Output())
		}
	})

	deadline := time.Now().Add(mountWait)
	for {
		select {
		case <-u.done:
			u.mu.Lock()
			u.killed, u.reported = true, true
			u.mu.Unlock()
			t.Fatalf("unionmount exited before mounting (%v): %s\n%s", u.status, strings.Join(argv, " "), u.Output())
		default:
		}
		now, err := mountsAt(abs)
		if err != nil {
			t.Fatalf("mount unionmount: %v", err)
		}
		if len(now) > len(before) && !HoldsFileIn(u.Pid, abs) {
			// Mounted, and go-fuse's start-up probe (it opens a file in
			// the mount and polls it) is over: a SIGKILL during that probe
			// leaves the daemon flushing a file of its own dead mount
			// forever, so tests that kill the daemon must not start
			// before it ends.
			u.dev = now[len(now)-1]
			return u
		}
		if time.Now().After(deadline) {
			u.Kill()
			u.mu.Lock()
			u.reported = true
			u.mu.Unlock()
			t.Fatalf("unionmount did not mount %s within %v: %s\n%s", mnt, mountWait, strings.Join(argv, " "), u.Output())
		}
		time.Sleep(5 * time.Millisecond) // polling for the mount to appear
	}
}

// Output returns what the daemon printed so far (stdout and stderr).
func (u *Union) Output() string { return u.out.String() }

// Done is closed once the daemon has exited.
func (u *Union) Done() <-chan struct{} { return u.done }

// Kill sends SIGKILL to the daemon. The mount stays until Unmount or the
// cleanup, which then do not expect exit status 0.
func (u *Union) Kill() error {
	u.mu.Lock()
	u.killed = true
	u.mu.Unlock()
	if err := u.Cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill unionmount %d: %w", u.Pid, err)
	}
	return nil
}

// Unmount unmounts with fusermount3 -u (umount -l if that fails) and waits
// for the daemon to exit; it is an error if the daemon does not exit 0
// within 10 s (unless the test killed it, or another mount namespace still
// holds the mount, which keeps the FUSE connection open). Later calls
// return the first result.
func (u *Union) Unmount() error {
	u.unmounts.Do(func() { u.err = u.unmount() })
	return u.err
}

func (u *Union) unmount() error {
	var errs []error
	if out, err := exec.Command("fusermount3", "-u", u.Mnt).CombinedOutput(); err != nil {
		if lerr := unix.Unmount(u.Mnt, unix.MNT_DETACH); lerr != nil && !errors.Is(lerr, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: fusermount3 -u: %v: %s; umount -l: %w",
				u.Mnt, err, bytes.TrimSpace(out), lerr))
		}
	}
	forced := false
	select {
	case <-u.done:
	case <-time.After(exitWait):
		forced = true
		if holders := mountHolders(u.dev); len(holders) > 0 {
			// Another mount namespace (a container or unshare -m started
			// while the mount existed) still holds the mount, so the
			// kernel keeps the connection open: not the daemon's fault.
			u.Cmd.Process.Kill()
			<-u.done
			u.mu.Lock()
			u.note = fmt.Sprintf("unionmount %d did not exit after the unmount because other mount "+
				"namespaces still hold the mount (%s); killed it", u.Pid, strings.Join(holders, ", "))
			u.mu.Unlock()
			break
		}
		// SIGQUIT makes a Go daemon print every goroutine's stack into
		// the output the test logs; SIGKILL if even that does not end it.
		u.Cmd.Process.Signal(unix.SIGQUIT)
		select {
		case <-u.done:
		case <-time.After(2 * time.Second):
			u.Cmd.Process.Kill()
			<-u.done
		}
		errs = append(errs, fmt.Errorf("unionmount %d did not exit within %v of the unmount, and no other "+
			"mount namespace holds the mount; sent SIGQUIT (goroutine dump in its output)", u.Pid, exitWait))
	}
	u.mu.Lock()
	killed := u.killed
	u.mu.Unlock()
	if !killed && !forced && u.status != nil {
		errs = append(errs, fmt.Errorf("unionmount %d exited with %v, want 0", u.Pid, u.status))
	}
	return errors.Join(errs...)
}

// WriteFuseOverlayfsShim writes dir/fuse-overlayfs-shim, a script that takes
// the command line MountUnion gives unionmount and serves the mount with
// fuse-overlayfs in the foreground instead, and returns its path. With
// UNIONMOUNT_BIN pointing at it, tests check MountUnion's plumbing, or their
// own expectations against a second implementation. Flags after the layers
// are ignored, and fuse-overlayfs does not unescape lowerdir, so layer paths
// with ':' or ',' do not work through it.
func WriteFuseOverlayfsShim(dir string) (string, error) {
	script := `#!/bin/sh
set -e
[ "$1" = -f ] && [ "$2" = --timeout ] && [ "$3" = 0 ] && [ "$4" = --lower ] || { echo "fuse-overlayfs-shim: bad args: $*" >&2; exit 2; }
opts="lowerdir=$5"
shift 5
if [ "$1" = --upper ]; then opts="$opts,upperdir=$2,workdir=$4"; shift 4; fi
if [ "$1" = --fail ]; then echo "fuse-overlayfs-shim: failing as asked" >&2; exit 1; fi
while [ $# -gt 1 ]; do shift; done # unionmount's other flags mean nothing here
exec fuse-overlayfs -f -o "$opts" "$1"
`
	p := filepath.Join(dir, "fuse-overlayfs-shim")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		return "", fmt.Errorf("write fuse-overlayfs shim: %w", err)
	}
	return p, nil
}

// canonical returns the absolute path of p with symlinks resolved, as
// /proc/self/mountinfo shows mount points.
func canonical(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}

// mountsAt returns the major:minor of each mount stacked on mountpoint,
// bottom first.
func mountsAt(mountpoint string) ([]string, error) {
	mounts, err := mountinfo.Self()
	if err != nil {
		return nil, err
	}
	var devs []string
	for _, m := range mountinfo.On(mounts, mountpoint) {
		devs = append(devs, m.Dev)
	}
	return devs, nil
}

// MountsUnder lists the mount points at or below dir (a canonical path),
// deepest first.
func MountsUnder(dir string) []string {
	mounts, _ := mountinfo.Self()
	var out []string
	for _, m := range mounts {
		if mp := m.Mountpoint; mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// mountHolders returns "pid (comm)" for processes in other mount namespaces
// that still have a mount of device dev (major:minor).
func mountHolders(dev string) []string {
	if dev == "" {
		return nil
	}
	self, _ := os.Readlink("/proc/self/ns/mnt")
	seen := map[string]bool{self: true}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	var out []string
	for _, p := range procs {
		ns, err := os.Readlink(p + "/ns/mnt")
		if err != nil || seen[ns] {
			continue
		}
		seen[ns] = true
		mounts, _ := mountinfo.ReadFile(p + "/mountinfo")
		if slices.ContainsFunc(mounts, func(m mountinfo.Mount) bool { return m.Dev == dev }) {
			comm, _ := os.ReadFile(p + "/comm")
			out = append(out, fmt.Sprintf("%s (%s)", filepath.Base(p), strings.TrimSpace(string(comm))))
		}
	}
	return out
}

// IsMountpoint reports whether p (made canonical) is a mount point.
func IsMountpoint(p string) (bool, error) {
	abs, err := canonical(p)
	if err != nil {
		return false, err
	}
	devs, err := mountsAt(abs)
	return len(devs) > 0, err
}

// syncBuffer is a bytes.Buffer safe for the daemon's output and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// HoldsFileIn reports whether process pid has an open file under dir.
func HoldsFileIn(pid int, dir string) bool {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return false
	}
	for _, fd := range fds {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(target, dir+"/") {
			return true
		}
	}
	return false
}

// AbortConnection aborts the FUSE connection of the mount at mnt through
// fusectl (mounting fusectl if it is not), as a daemon killed during
// go-fuse's start-up probe needs before it can finish exiting.
func AbortConnection(mnt string) error {
	mounts, err := mountinfo.Self()
	if err != nil {
		return err
	}
	if entries, _ := os.ReadDir("/sys/fs/fuse/connections"); len(entries) == 0 {
		unix.Mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, "")
	}
	for _, m := range mountinfo.On(mounts, mnt) {
		var major, minor int
		if _, err := fmt.Sscanf(m.Dev, "%d:%d", &major, &minor); err != nil {
			return fmt.Errorf("mountinfo %q: %w", m.Dev, err)
		}
		p := fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", minor)
		if err := os.WriteFile(p, []byte("1"), 0); err != nil {
			return fmt.Errorf("abort %s: %w", p, err)
		}
		return nil
	}
	return fmt.Errorf("no mount at %s", mnt)
}

// WorkLeftovers lists what is in workdir's private subdirectory ("work",
// unionmount's and the kernel's): nothing once an operation has finished
// or a mount has cleaned up. A missing subdirectory lists nothing.
func WorkLeftovers(t testing.TB, workdir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(workdir, "work"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
