package reliability

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/internal/testenv"
	"golang.org/x/sys/unix"
)

var (
	long        = flag.Bool("reliability.long", false, "long mode: 1M fsx ops per configuration, 5 min of load, a 1M-entry walk")
	seedFlag    = flag.Uint64("reliability.seed", 1, "seed of the random workloads")
	fsxOpsFlag  = flag.Int("reliability.fsxops", 0, "fsx operations per unionmount configuration, half that on the kernel (default 8000, long 1000000)")
	loadTime    = flag.Duration("reliability.loadtime", 0, "duration of the load (default 20s, long 5m)")
	workersFlag = flag.Int("reliability.workers", 16, "load worker processes")
	walkFlag    = flag.Int("reliability.walk", 0, "entries of the memory walk (default 50000, long 1000000)")
)

func fsxOps() int {
	switch {
	case *fsxOpsFlag > 0:
		return *fsxOpsFlag
	case *long:
		return 1_000_000
	}
	return 8_000
}

func loadDuration() time.Duration {
	switch {
	case *loadTime > 0:
		return *loadTime
	case *long:
		return 5 * time.Minute
	}
	return 20 * time.Second
}

func walkEntries() int {
	switch {
	case *walkFlag > 0:
		return *walkFlag
	case *long:
		return 1_000_000
	}
	return 50_000
}

// envWorker makes the test binary a worker process (see worker_test.go).
const envWorker = "RELIABILITY_WORKER"

func TestMain(m *testing.M) {
	if kind := os.Getenv(envWorker); kind != "" {
		os.Exit(workerMain(kind))
	}
	flag.Parse()
	// Race-enabled processes sleep a second at exit unless told not to.
	if g := os.Getenv("GORACE"); !strings.Contains(g, "atexit_sleep_ms") {
		os.Setenv("GORACE", strings.TrimSpace(g+" atexit_sleep_ms=0"))
	}
	code := m.Run()
	fstest.RemoveBinary()
	builds.remove()
	os.Exit(code)
}

// layers is one union's directories: lower, upper, work and mount point.
type layers struct {
	root, lower, upper, work, mnt string
}

// newLayers makes the four directories under base (a fresh test temp dir
// when base is ""). All are 0755 and reachable by every user.
func newLayers(t testing.TB, base string) layers {
	t.Helper()
	if base == "" {
		base = publicTempDir(t)
	}
	l := layers{base, filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "mnt")}
	for _, d := range []string{l.lower, l.upper, l.work, l.mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func (l layers) mount(t testing.TB, args ...string) *fstest.Union {
	t.Helper()
	return fstest.MountUnion(t, []string{l.lower}, l.upper, l.work, l.mnt, args...)
}

func (l layers) mountKernel(t testing.TB) *fstest.KernelMount {
	t.Helper()
	return fstest.MountKernelOverlay(t, []string{l.lower}, l.upper, l.work, l.mnt)
}

// workLeftovers lists what is in the workdir's private subdirectory.
func (l layers) workLeftovers(t testing.TB) []string {
	t.Helper()
	return fstest.WorkLeftovers(t, l.work)
}

// publicTempDir is t.TempDir made reachable by other users (the testing
// package creates it 0700 under a 0700 parent).
func publicTempDir(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	for _, p := range []string{filepath.Dir(d), d} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// mountTmpfs mounts a tmpfs with opts (e.g. "size=8m") on dir, unmounted at
// cleanup (registered now, so it runs after the cleanups of mounts made on
// top of it later).
func mountTmpfs(t testing.TB, dir, opts string) {
	t.Helper()
	fstest.RequireRoot(t)
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, opts+",mode=0755"); err != nil {
		t.Fatalf("mount tmpfs on %s (%s): %v", dir, opts, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount tmpfs %s: %v", dir, err)
			}
		}
	})
}

// buildCache holds the daemons built by daemonBinary, one per flavour
// (race or not), and the workers' copy of the test binary.
type buildCache struct {
	mu    sync.Mutex
	dir   string
	paths map[bool]string
	errs  map[bool]error
}

var builds buildCache

func (b *buildCache) remove() {
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// daemonBinary returns a unionmount binary built with -race (race) or
// without. Without race, $UNIONMOUNT_BIN is used when set. Each flavour is
// built once per test process into a directory TestMain removes.
func daemonBinary(t testing.TB, race bool) string {
	t.Helper()
	if p := os.Getenv("UNIONMOUNT_BIN"); p != "" && !race {
		return p
	}
	return buildDaemon(t, race)
}

// plainDaemonBinary returns a unionmount built without -race, for
// measurements of the daemon's memory: $UNIONMOUNT_PLAIN_BIN when set.
// $UNIONMOUNT_BIN is not used: make test sets it to a race build, whose
// shadow memory would count as the daemon's.
func plainDaemonBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("UNIONMOUNT_PLAIN_BIN"); p != "" {
		return p
	}
	return buildDaemon(t, false)
}

// buildDaemon builds each flavour once per test process.
func buildDaemon(t testing.TB, race bool) string {
	t.Helper()
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.paths == nil {
		builds.paths, builds.errs = map[bool]string{}, map[bool]error{}
	}
	if p, ok := builds.paths[race]; ok {
		return p
	}
	if err, ok := builds.errs[race]; ok {
		t.Fatal(err)
	}
	err := func() error {
		root, err := fstest.ModuleRoot()
		if err != nil {
			return err
		}
		if builds.dir == "" {
			if builds.dir, err = os.MkdirTemp("", "reliability-bin-"); err != nil {
				return err
			}
			if err := os.Chmod(builds.dir, 0o755); err != nil {
				return err
			}
		}
		name := "unionmount"
		args := []string{"build", "-o", filepath.Join(builds.dir, name)}
		if race {
			name = "unionmount-race"
			args = []string{"build", "-race", "-o", filepath.Join(builds.dir, name)}
		}
		cmd := exec.Command("go", append(args, "./cmd/unionmount")...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		builds.paths[race] = filepath.Join(builds.dir, name)
		return nil
	}()
	if err != nil {
		builds.errs[race] = err
		t.Fatal(err)
	}
	return builds.paths[race]
}

// mountBinary mounts l with the given binary (see daemonBinary).
func (l layers) mountBinary(t *testing.T, bin string, args ...string) *fstest.Union {
	t.Helper()
	t.Setenv("UNIONMOUNT_BIN", bin)
	return l.mount(t, args...)
}

// procStats is what /proc says about a daemon.
type procStats struct {
	FDs     int // open descriptors
	Pipes   int // of which pipes (go-fuse keeps a pool of splice pipes)
	PathFDs int // of which O_PATH: directories held for nodes, layer roots
	Files   int // of which other paths in a filesystem (open files, the workdir)
	RSS     int64
	HWM     int64 // peak RSS
	Threads int
	Paths   []string // what the descriptors counted in Files point to
}

func (s procStats) String() string {
	return fmt.Sprintf("%d fds (%d pipes, %d O_PATH, %d files), RSS %.1f MiB (peak %.1f MiB), %d threads",
		s.FDs, s.Pipes, s.PathFDs, s.Files, float64(s.RSS)/(1<<20), float64(s.HWM)/(1<<20), s.Threads)
}

// isOPath reports whether descriptor fd of pid was opened with O_PATH:
// the directory descriptors the daemon holds for nodes (bounded by
// --max-dir-fds) and the layer roots.
func isOPath(pid int, fd string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			return err == nil && flags&unix.O_PATH != 0
		}
	}
	return false
}

func readProcStats(pid int) (procStats, error) {
	var s procStats
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return s, err
	}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		s.FDs++
		switch {
		case isOPath(pid, e.Name()):
			s.PathFDs++
		case strings.HasPrefix(target, "pipe:"):
			s.Pipes++
		case strings.HasPrefix(target, "/"):
			s.Files++
			s.Paths = append(s.Paths, target)
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			s.RSS = n << 10
		case "VmHWM":
			s.HWM = n << 10
		case "Threads":
			s.Threads = int(n)
		}
	}
	return s, nil
}

// within runs f and waits at most d for it. A call that does not return in
// time is reported as hung; it keeps running (a hung FUSE request ends
// when the daemon dies).
func within(d time.Duration, f func() error) (err error, hung bool) {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err, false
	case <-time.After(d):
		return nil, true
	}
}

// errnoName is the symbolic name of err's errno ("EACCES"), "" for nil,
// or the error text.
func errnoName(err error) string {
	if err == nil {
		return ""
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return n
		}
		return fmt.Sprintf("errno %d", int(e))
	}
	return err.Error()
}

// selfExe is a copy of the test binary that every user can run: workers
// that change their uid cannot reach the go build directory (0700).
var selfExe struct {
	once sync.Once
	path string
	err  error
}

func workerExe(t testing.TB) string {
	t.Helper()
	selfExe.once.Do(func() {
		exe, err := os.Executable()
		if err != nil {
			selfExe.err = err
			return
		}
		builds.mu.Lock()
		defer builds.mu.Unlock()
		if builds.dir == "" {
			if builds.dir, err = os.MkdirTemp("", "reliability-bin-"); err != nil {
				selfExe.err = err
				return
			}
			if err := os.Chmod(builds.dir, 0o755); err != nil {
				selfExe.err = err
				return
			}
		}
		src, err := os.Open(exe)
		if err != nil {
			selfExe.err = err
			return
		}
		defer src.Close()
		p := filepath.Join(builds.dir, "reliability.test")
		dst, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
		if err != nil {
			selfExe.err = err
			return
		}
		_, err = io.Copy(dst, src)
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
		selfExe.path, selfExe.err = p, err
	})
	if selfExe.err != nil {
		t.Fatalf("copy the test binary for workers: %v", selfExe.err)
	}
	return selfExe.path
}

// workerCmd prepares a worker process of the given kind reading job (as
// JSON) on stdin, as cred's user when cred is not nil.
func workerCmd(t testing.TB, kind string, job any, cred *syscall.Credential) *exec.Cmd {
	t.Helper()
	b, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(workerExe(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), envWorker+"="+kind)
	cmd.Stdin = bytes.NewReader(b)
	cmd.Dir = "/"
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	return cmd
}

// runWorker runs a worker to completion and decodes its stdout into out.
func runWorker(t testing.TB, kind string, job, out any, cred *syscall.Credential) {
	t.Helper()
	cmd := workerCmd(t, kind, job, cred)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s worker: %v\n%s", kind, err, stderr.String())
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s worker: decode %q: %v\n%s", kind, b, err, stderr.String())
	}
}

// nobody is the unprivileged user of the permission checks; other is a
// second one without a passwd entry.
var (
	nobody = &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}
	other  = &syscall.Credential{Uid: 4242, Gid: 4242, Groups: []uint32{}}
)

// holdSyscall makes every call of the system call name by process pid
// wait d at its entry (strace -e inject=NAME:delay_enter), which widens a
// race window in the daemon to something a test can hit every time. It
// returns once strace has attached to every thread; stop detaches it (also
// at cleanup). Without strace the test is skipped.
func holdSyscall(t *testing.T, pid int, name string, d time.Duration) (stop func()) {
	t.Helper()
	if _, err := exec.LookPath("strace"); err != nil {
		testenv.Skipf(t, "needs strace to hold a system call (apt-get install strace)")
	}
	cmd := exec.Command("strace", "-f", "-qq", "-e", "signal=none", "-o", "/dev/null", "-p", strconv.Itoa(pid),
		"-e", "trace="+name, "-e", fmt.Sprintf("inject=%s:delay_enter=%d", name, d.Microseconds()))
	var out bytes.Buffer
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start strace: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cmd.Process.Signal(os.Interrupt)
			<-exited
		})
	}
	t.Cleanup(stop)
	attached := func() bool {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil || len(tasks) == 0 {
			return false
		}
		for _, task := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
			if err != nil || !strings.Contains(string(b), fmt.Sprintf("TracerPid:\t%d\n", cmd.Process.Pid)) {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(10 * time.Second)
	for !attached() {
		select {
		case <-exited:
			t.Fatalf("strace exited before attaching to %d: %s", pid, out.String())
		default:
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("strace did not attach to %d within 10s", pid)
		}
		time.Sleep(5 * time.Millisecond) // polling /proc for the attach
	}
	return stop
}
