package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/internal/mountinfo"
	"github.com/unionmount/unionmount/internal/testenv"
)

// runAsMain makes the test binary act as unionmount, so the end-to-end
// tests run the real command (daemon re-exec of /proc/self/exe included)
// without building anything.
const runAsMain = "UNIONMOUNT_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runAsMain) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// unionmountCmd is the command line `unionmount args...`.
func unionmountCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), runAsMain+"=1")
	return cmd
}

// runUnionmount runs unionmount as containers/storage does (stderr into a
// buffer, which also proves the daemon does not hold on to it) and returns
// its exit status and stderr.
func runUnionmount(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	cmd := unionmountCmd(t, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), stderr.String()
	default:
		t.Fatalf("run unionmount %q: %v", args, err)
		return -1, ""
	}
}

// skipUnlessFUSE skips a test that needs to mount.
func skipUnlessFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skipf(t, "needs root: /dev/fuse is root-only here and the tests mount directly")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Skipf(t, "needs /dev/fuse: %v", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		testenv.Skipf(t, "needs fusermount3 (apt-get install fuse3)")
	}
}

func mounted(t *testing.T, mnt string) bool {
	t.Helper()
	ok, err := mountinfo.IsMountpoint(mnt)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// waitUntil polls cond until it holds; the deadline only turns a hang into
// a failure.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after 10s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// daemonPIDs lists the unionmount daemons serving mnt.
func daemonPIDs(t *testing.T, mnt string) []string {
	t.Helper()
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []string
	for _, c := range cmdlines {
		b, err := os.ReadFile(c)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		hasFlag, hasMnt := false, false
		for _, a := range args {
			hasFlag = hasFlag || a == readyFDArg(3)
			hasMnt = hasMnt || a == mnt
		}
		if hasFlag && hasMnt {
			pids = append(pids, filepath.Base(filepath.Dir(c)))
		}
	}
	return pids
}

func unmountLazily(t *testing.T, mnt string) {
	t.Cleanup(func() {
		if mounted(t, mnt) {
			_ = exec.Command("fusermount3", "-u", "-z", mnt).Run()
		}
	})
}

// layers fills the fixture's lowers: a shadowed in l2, b only in l2.
func layers(t *testing.T, fx fixture) {
	t.Helper()
	for p, data := range map[string]string{
		filepath.Join(fx.l1, "a"): "top",
		filepath.Join(fx.l2, "a"): "bottom",
		filepath.Join(fx.l2, "b"): "b",
	} {
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func checkMerged(t *testing.T, mnt string) {
	t.Helper()
	for name, want := range map[string]string{"a": "top", "b": "b"} {
		got, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil || string(got) != want {
			t.Errorf("read %s through the mount = %q, %v; want %q", name, got, err, want)
		}
	}
}

// TestDaemonReadinessPipe runs both forms as containers/storage runs its
// mount_program and checks that the command returns 0 once the daemon
// serves the mount, and that the daemon exits after fusermount3 -u.
func TestDaemonReadinessPipe(t *testing.T) {
	skipUnlessFUSE(t)
	for _, form := range []string{"flags", "-o"} {
		t.Run(form, func(t *testing.T) {
			fx := newFixture(t)
			layers(t, fx)
			args := []string{"--lower", fx.l1 + ":" + fx.l2, "--upper", fx.u, "--workdir", fx.w, fx.mnt}
			if form == "-o" { // layers relative to the directory it runs in
				args = []string{"-o", `lowerdir=l1:l2,,upperdir=u,workdir=w,context="a:b:c1,c2",xattr_permissions=2`, fx.mnt}
			}
			code, stderr := runUnionmount(t, fx.root, args...)
			if code != exitOK || stderr != "" {
				t.Fatalf("unionmount %q = %d, stderr %q; want 0 and nothing", args, code, stderr)
			}
			unmountLazily(t, fx.mnt)
			if !mounted(t, fx.mnt) {
				t.Fatalf("%s is not a mount point after unionmount returned 0", fx.mnt)
			}
			checkMerged(t, fx.mnt)
			if pids := daemonPIDs(t, fx.mnt); len(pids) != 1 {
				t.Fatalf("daemons serving %s: %v; want one", fx.mnt, pids)
			}
			if out, err := exec.Command("fusermount3", "-u", fx.mnt).CombinedOutput(); err != nil {
				t.Fatalf("fusermount3 -u: %v %s", err, out)
			}
			waitUntil(t, "the daemon to exit after fusermount3 -u", func() bool {
				return len(daemonPIDs(t, fx.mnt)) == 0
			})
		})
	}
}

// TestDaemonReportsMountError: when the mount fails in the daemon, after
// the parent's checks passed, the parent prints the daemon's error and
// exits 1. The failure is a file where the workdir's "work" directory
// goes, which only the mount itself looks at; it happens before any FUSE
// work, so the test needs neither root nor /dev/fuse.
func TestDaemonReportsMountError(t *testing.T) {
	fx := newFixture(t)
	layers(t, fx)
	if err := os.WriteFile(filepath.Join(fx.w, "work"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--lower", fx.l1, "--upper", fx.u, "--workdir", fx.w, fx.mnt}
	code, stderr := runUnionmount(t, fx.root, args...)
	if code == exitOK {
		unmountLazily(t, fx.mnt)
		t.Skip("not applicable: the mount accepted a file at workdir/work, so there is no failure to report")
	}
	if code != exitFailure || !strings.HasPrefix(stderr, "unionmount: ") ||
		strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "work") {
		t.Errorf("unionmount %q = %d, stderr %q; want 1 and the daemon's error about workdir/work", args, code, stderr)
	}
	if strings.Contains(stderr, "without reporting") {
		t.Errorf("stderr %q: the daemon's error did not cross the readiness pipe", stderr)
	}
	if pids := daemonPIDs(t, fx.mnt); len(pids) != 0 {
		t.Errorf("daemons %v left after a failed mount", pids)
	}
}

// startForeground starts `unionmount -f` and waits for the mount; it
// returns a channel that yields the exit status.
func startForeground(t *testing.T, fx fixture) (*exec.Cmd, <-chan int) {
	t.Helper()
	skipUnlessFUSE(t)
	layers(t, fx)
	cmd := unionmountCmd(t, "-f", "--timeout", "0", "--lower", fx.l1+":"+fx.l2, fx.mnt)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan int, 1)
	go func() {
		err := cmd.Wait()
		var exit *exec.ExitError
		switch {
		case err == nil:
			exited <- 0
		case errors.As(err, &exit):
			exited <- exit.ExitCode()
		default:
			exited <- -1
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})
	unmountLazily(t, fx.mnt)
	var early = -2
	waitUntil(t, "the foreground mount", func() bool {
		select {
		case early = <-exited:
			return true
		default:
			return mounted(t, fx.mnt)
		}
	})
	if early != -2 {
		t.Fatalf("unionmount -f exited with %d before mounting: %s", early, stderr.String())
	}
	return cmd, exited
}

func waitExit(t *testing.T, exited <-chan int, what string) int {
	t.Helper()
	select {
	case code := <-exited:
		return code
	case <-time.After(10 * time.Second):
		t.Fatalf("unionmount -f still running 10s after %s", what)
		return -1
	}
}

func TestForegroundSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			fx := newFixture(t)
			cmd, exited := startForeground(t, fx)
			checkMerged(t, fx.mnt)
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if code := waitExit(t, exited, sig.String()); code != exitOK {
				t.Errorf("unionmount -f exited %d after %v; want 0", code, sig)
			}
			if mounted(t, fx.mnt) {
				t.Errorf("%s still mounted after %v", fx.mnt, sig)
			}
		})
	}
}

func TestForegroundFusermount(t *testing.T) {
	fx := newFixture(t)
	cmd, exited := startForeground(t, fx)
	// The mount shows in mountinfo before go-fuse's own first access to
	// it (its poll probe) is over; until then the unmount is EBUSY, or,
	// if it lands between the probe's steps, the mount counts as failed
	// (exit 1). Unmount once the mount answers and the probe is done.
	waitUntil(t, "the mount to answer and the start-up probe to end", func() bool {
		_, err := os.ReadDir(fx.mnt)
		return err == nil && !fstest.HoldsFileIn(cmd.Process.Pid, fx.mnt)
	})
	waitUntil(t, "fusermount3 -u to succeed", func() bool {
		return exec.Command("fusermount3", "-u", fx.mnt).Run() == nil
	})
	if code := waitExit(t, exited, "fusermount3 -u"); code != exitOK {
		t.Errorf("unionmount -f exited %d after fusermount3 -u; want 0", code)
	}
}

// TestForegroundBusyDetaches: SIGTERM while a file on the mount is open
// detaches the mount at once and the daemon exits when the file is closed.
func TestForegroundBusyDetaches(t *testing.T) {
	fx := newFixture(t)
	cmd, exited := startForeground(t, fx)
	f, err := os.Open(filepath.Join(fx.mnt, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the busy mount to be detached", func() bool { return !mounted(t, fx.mnt) })
	select {
	case code := <-exited:
		t.Fatalf("unionmount -f exited (%d) while a file on its mount was open", code)
	default:
	}
	if b, err := f.ReadAt(make([]byte, 3), 0); err != nil || b != 3 {
		t.Errorf("read of the open file after the detach: %d, %v", b, err)
	}
	f.Close()
	if code := waitExit(t, exited, "the last file closed"); code != exitOK {
		t.Errorf("unionmount -f exited %d; want 0", code)
	}
}

// TestDeadMountpoint: a mount whose daemon was killed (stat gives
// ENOTCONN) is refused with the command that clears it.
func TestDeadMountpoint(t *testing.T) {
	fx := newFixture(t)
	cmd, exited := startForeground(t, fx)
	// go-fuse opens and polls a file in a new mount before serving; a
	// SIGKILL then leaves the daemon flushing that file to its own dead
	// mount (D state) until the connection is aborted (a known bug, see
	// internal/crash TestKillDuringStartup). Kill after it, and abort the
	// connection if the kill still lands inside it.
	waitUntil(t, "the mount to answer and the start-up probe to end", func() bool {
		_, err := os.ReadDir(fx.mnt)
		return err == nil && !fstest.HoldsFileIn(cmd.Process.Pid, fx.mnt)
	})
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(3 * time.Second):
		if err := fstest.AbortConnection(fx.mnt); err != nil {
			t.Fatalf("killed daemon hung in its exit and aborting its connection failed: %v", err)
		}
		waitExit(t, exited, "SIGKILL and connection abort")
	}
	var stdout, stderr bytes.Buffer
	code := run([]string{"--lower", fx.l1, fx.mnt}, &stdout, &stderr)
	want := fmt.Sprintf("unionmount: MOUNTPOINT %q: a FUSE mount whose daemon is gone; unmount it with fusermount3 -u -z %s\n",
		fx.mnt, fx.mnt)
	if code != exitUsage || stderr.String() != want {
		t.Errorf("run over a dead mount = %d, %q; want %d, %q", code, stderr.String(), exitUsage, want)
	}
}
