package crash

import (
	"golang.org/x/sys/unix"

	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/internal/testenv"
)

// Kill points at system calls
//
// A kill after a random delay rarely lands in the few microseconds between
// two system calls of one operation, which is where atomicity is won or
// lost. These tests place the kill exactly: strace traces the daemon while
// the operation runs once, which lists the system calls that change the
// layers; then, for each of them, a fresh mount runs the operation with
// strace delaying that system call's return (inject=SYSCALL:delay_exit),
// and the daemon is killed during the delay, just after the call took
// effect. The merged view after a remount must be the one before the
// operation or the one after it.

// straceDelay is how long every call of the chosen system call is held
// at its return; the kill comes straceKillAfter into the hold.
const (
	straceDelay     = 150 * time.Millisecond
	straceKillAfter = 60 * time.Millisecond
)

// changing lists the system calls by which the daemon changes a layer (and
// openat, kept only with O_CREAT or O_TMPFILE). write is left out: the
// daemon answers the kernel with it.
var changing = []string{
	"openat", "mkdirat", "mknodat", "unlinkat", "renameat2", "renameat", "linkat", "symlinkat",
	"fchownat", "fchown", "fchmodat", "fchmod", "fsetxattr", "lsetxattr", "setxattr",
	"fremovexattr", "lremovexattr", "removexattr", "utimensat", "ftruncate", "fallocate",
	"copy_file_range", "pwrite64", "fsync", "fdatasync", "ioctl",
}

// traceLine matches a line of `strace -f -qq` (with or without a pid
// prefix): the system call's name and the rest. Resumed halves do not
// match.
var traceLine = regexp.MustCompile(`^(?:\[pid\s+\d+\]\s+|\d+\s+)?([a-z0-9_]+)\((.*)$`)

// killPoint is one system call of a traced operation: the k-th call of
// Name (counting every call of Name, kept or not).
type killPoint struct {
	Name string
	K    int
	Line string
}

// syscallScenario is one operation to kill at every system call.
type syscallScenario struct {
	name    string
	fixture []fstest.Applier       // the lower layer
	setup   func(mnt string) error // through the mount, before the operation
	op      func(mnt string) error
}

// tracer is a running strace.
type tracer struct {
	cmd    *exec.Cmd
	lines  chan string   // its output, closed when it ends
	exited chan struct{} // closed once it has exited
}

// startStrace runs strace on pid and returns once every thread of pid is
// traced.
func startStrace(t *testing.T, pid int, args ...string) *tracer {
	t.Helper()
	argv := append([]string{"-f", "-qq", "-e", "signal=none", "-p", fmt.Sprint(pid)}, args...)
	tr := &tracer{cmd: exec.Command("strace", argv...), lines: make(chan string, 1024), exited: make(chan struct{})}
	stderr, err := tr.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.cmd.Start(); err != nil {
		t.Fatalf("start strace: %v", err)
	}
	var first []string
	var mu sync.Mutex
	go func() {
		defer close(tr.lines)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			mu.Lock()
			if len(first) < 10 {
				first = append(first, sc.Text())
			}
			mu.Unlock()
			tr.lines <- sc.Text()
		}
	}()
	go func() {
		tr.cmd.Wait()
		close(tr.exited)
	}()
	// Attached once every task names strace as its tracer.
	deadline := time.Now().Add(10 * time.Second)
	for !tracedBy(pid, tr.cmd.Process.Pid) {
		select {
		case <-tr.exited:
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("strace %s: exited before attaching: %v\n%s", strings.Join(argv, " "), tr.cmd.ProcessState, strings.Join(first, "\n"))
		default:
		}
		if time.Now().After(deadline) {
			tr.cmd.Process.Kill()
			t.Fatalf("strace did not attach to %d within 10s", pid)
		}
		time.Sleep(5 * time.Millisecond) // polling /proc for the attach
	}
	return tr
}

func tracedBy(pid, tracer int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		if err != nil {
			return false
		}
		if !strings.Contains(string(b), fmt.Sprintf("TracerPid:\t%d\n", tracer)) {
			return false
		}
	}
	return true
}

// stop detaches strace (SIGINT) and returns the rest of its output.
func (tr *tracer) stop() []string {
	tr.cmd.Process.Signal(os.Interrupt)
	return tr.wait()
}

// wait returns the rest of strace's output once it has exited.
func (tr *tracer) wait() []string {
	var out []string
	for l := range tr.lines {
		out = append(out, l)
	}
	<-tr.exited
	return out
}

// calibrate runs the scenario once under strace and returns the merged
// views before and after the operation and the kill points, in order.
func calibrate(t *testing.T, sc syscallScenario) (before, after tree, points []killPoint) {
	t.Helper()
	d := newDirs(t)
	if err := fstest.Apply(d.lower, sc.fixture...); err != nil {
		t.Fatal(err)
	}
	u := d.mount(t)
	if sc.setup != nil {
		if err := sc.setup(d.mnt); err != nil {
			t.Fatalf("%s: setup: %v", sc.name, err)
		}
	}
	before = readTree(t, d.mnt)
	tr := startStrace(t, u.Pid, "-e", "trace="+strings.Join(changing, ","))
	if err := sc.op(d.mnt); err != nil {
		t.Fatalf("%s: %v", sc.name, err)
	}
	trace := tr.stop()
	after = readTree(t, d.mnt)
	if err := u.Unmount(); err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, l := range trace {
		m := traceLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		name, args := m[1], m[2]
		count[name]++
		if name == "openat" && !strings.Contains(args, "O_CREAT") && !strings.Contains(args, "O_TMPFILE") {
			continue
		}
		if name == "ioctl" && !strings.Contains(args, "FICLONE") {
			continue
		}
		points = append(points, killPoint{Name: name, K: count[name], Line: l})
	}
	return before, after, points
}

// killAt runs the scenario on a fresh mount and kills the daemon just
// after the kill point's system call. It returns whether the kill landed
// there (else the operation finished first) and the merged view after a
// remount.
func killAt(t *testing.T, sc syscallScenario, p killPoint) (landed bool, got tree) {
	t.Helper()
	d := newDirs(t)
	if err := fstest.Apply(d.lower, sc.fixture...); err != nil {
		t.Fatal(err)
	}
	u := d.mount(t)
	if sc.setup != nil {
		if err := sc.setup(d.mnt); err != nil {
			t.Fatalf("%s: setup: %v", sc.name, err)
		}
	}
	tr := startStrace(t, u.Pid, "-e", "trace="+p.Name,
		"-e", fmt.Sprintf("inject=%s:delay_exit=%d", p.Name, straceDelay.Microseconds()))
	done := make(chan error, 1)
	go func() { done <- sc.op(d.mnt) }()
	seen := 0
wait:
	for {
		select {
		case l, ok := <-tr.lines:
			if !ok {
				break wait
			}
			if m := traceLine.FindStringSubmatch(l); m != nil && m[1] == p.Name {
				seen++
				if seen == p.K {
					time.Sleep(straceKillAfter) // into the held return of the call
					if err := u.Kill(); err != nil {
						t.Fatal(err)
					}
					reap(t, u, d.mnt)
					landed = true
					break wait
				}
			}
		case <-done:
			done <- nil
			break wait
		}
	}
	<-done
	if landed {
		tr.wait()
	} else {
		tr.stop()
	}
	if err := u.Unmount(); err != nil {
		t.Fatal(err)
	}
	u2 := d.mount(t)
	emptyWork(t, d)
	got = readTree(t, d.mnt)
	if err := u2.Unmount(); err != nil {
		t.Fatal(err)
	}
	return landed, got
}

// runSyscallScenario kills sc at its kill points (at most max of them,
// spread evenly, the last always among them; max <= 0: all) and checks the
// merged view.
func runSyscallScenario(t *testing.T, sc syscallScenario, max int) {
	t.Helper()
	before, after, all := calibrate(t, sc)
	if len(all) == 0 {
		t.Fatalf("%s: strace saw no system call that changes a layer", sc.name)
	}
	points := all
	if max > 0 && len(all) > max {
		points = nil
		for i := 1; i <= max; i++ {
			points = append(points, all[i*len(all)/max-1])
		}
	}
	var nb, na, missed int
	for _, p := range points {
		landed, got := killAt(t, sc, p)
		if !landed {
			missed++
		}
		switch {
		case diffTrees(before, got) == "":
			nb++
		case diffTrees(after, got) == "":
			na++
		default:
			t.Errorf("%s, killed after %s #%d (%s): the merged view is neither the one before nor the one after:\n  vs before: %s\n  vs after:  %s",
				sc.name, p.Name, p.K, strings.TrimSpace(p.Line), diffTrees(before, got), diffTrees(after, got))
		}
	}
	t.Logf("%s: %d of %d kill points (%d missed: the operation finished first): %d showed the state before, %d the state after",
		sc.name, len(points), len(all), missed, nb, na)
}

func requireStrace(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("strace"); err != nil {
		testenv.Skipf(t, "needs strace for exact kill points (apt-get install strace)")
	}
}

func bigFile(name string) []byte { return []byte(strings.Repeat("content of "+name+"\n", 1<<10)) }

// syscallScenarios are the operations killed at every system call.
func syscallScenarios() []syscallScenario {
	lower := []fstest.Applier{
		fstest.CreateDir("a", 0o755), fstest.CreateDir("b", 0o755), fstest.CreateDir("m", 0o755),
		fstest.CreateFile("a/f", bigFile("a/f"), 0o644),
		fstest.CreateFile("a/g", bigFile("a/g"), 0o640),
		fstest.CreateFile("b/x", bigFile("b/x"), 0o644),
		fstest.CreateFile("m/c", bigFile("m/c"), 0o644),
	}
	at := func(mnt string, p ...string) string { return filepath.Join(append([]string{mnt}, p...)...) }
	return []syscallScenario{
		{name: "rename lower file to another merged dir", fixture: lower,
			op: func(mnt string) error { return os.Rename(at(mnt, "a/f"), at(mnt, "b/y")) }},
		{name: "rename lower file over lower file", fixture: lower,
			op: func(mnt string) error { return os.Rename(at(mnt, "a/f"), at(mnt, "a/g")) }},
		{name: "rename new file over lower file", fixture: lower,
			setup: func(mnt string) error { return os.WriteFile(at(mnt, "a/n"), []byte("new\n"), 0o644) },
			op:    func(mnt string) error { return os.Rename(at(mnt, "a/n"), at(mnt, "a/f")) }},
		{name: "unlink lower file", fixture: lower,
			op: func(mnt string) error { return os.Remove(at(mnt, "a/f")) }},
		{name: "rmdir merged dir", fixture: lower,
			setup: func(mnt string) error { return os.Remove(at(mnt, "m/c")) },
			op:    func(mnt string) error { return os.Remove(at(mnt, "m")) }},
		{name: "chmod lower file (metadata copy-up)", fixture: lower,
			op: func(mnt string) error { return os.Chmod(at(mnt, "a/g"), 0o600) }},
		{name: "link lower file", fixture: lower,
			op: func(mnt string) error { return os.Link(at(mnt, "a/f"), at(mnt, "b/l")) }},
		{name: "mkdir over whiteout of merged dir", fixture: lower,
			setup: func(mnt string) error {
				if err := os.Remove(at(mnt, "m/c")); err != nil {
					return err
				}
				return os.Remove(at(mnt, "m"))
			},
			op: func(mnt string) error { return os.Mkdir(at(mnt, "m"), 0o755) }},
		{name: "create over whiteout of lower file", fixture: lower,
			setup: func(mnt string) error { return os.Remove(at(mnt, "a/f")) },
			// One CREATE: a write after it would be an operation of its own.
			op: func(mnt string) error { return os.WriteFile(at(mnt, "a/f"), nil, 0o644) }},
		{name: "rename new dir over whiteout of merged dir", fixture: lower,
			setup: func(mnt string) error {
				for _, f := range []func() error{
					func() error { return os.Remove(at(mnt, "m/c")) },
					func() error { return os.Remove(at(mnt, "m")) },
					func() error { return os.Mkdir(at(mnt, "n"), 0o755) },
					func() error { return os.WriteFile(at(mnt, "n/z"), []byte("z\n"), 0o644) },
				} {
					if err := f(); err != nil {
						return err
					}
				}
				return nil
			},
			op: func(mnt string) error { return os.Rename(at(mnt, "n"), at(mnt, "m")) }},
		{name: "rename new dir over emptied merged dir", fixture: lower,
			setup: func(mnt string) error {
				if err := os.Remove(at(mnt, "m/c")); err != nil {
					return err
				}
				return os.Mkdir(at(mnt, "n"), 0o755)
			},
			// rename(2): os.Rename refuses to replace a directory.
			op: func(mnt string) error { return unix.Rename(at(mnt, "n"), at(mnt, "m")) }},
		{name: "symlink over whiteout of lower file", fixture: lower,
			setup: func(mnt string) error { return os.Remove(at(mnt, "a/f")) },
			op:    func(mnt string) error { return os.Symlink("g", at(mnt, "a/f")) }},
	}
}

// TestKillAtSyscalls kills the daemon just after each system call that
// changes a layer, for renames, unlinks, rmdir of a merged directory,
// metadata copy-up and link, and checks the merged view after a remount.
// By default it runs the first and the rmdir scenario with 4 kill points
// each; with -crash.points above its default (the long mode) every
// scenario at every kill point.
func TestKillAtSyscalls(t *testing.T) {
	fstest.RequireFUSE(t)
	requireStrace(t)
	long := *points > 6
	for i, sc := range syscallScenarios() {
		if !long && i != 0 && sc.name != "rmdir merged dir" {
			continue
		}
		max := 4
		if long {
			max = 0
		}
		t.Run(strings.ReplaceAll(sc.name, " ", "_"), func(t *testing.T) { runSyscallScenario(t, sc, max) })
	}
}

func scenarioNamed(t *testing.T, name string) syscallScenario {
	for _, sc := range syscallScenarios() {
		if sc.name == name {
			return sc
		}
	}
	t.Fatalf("no scenario %q", name)
	return syscallScenario{}
}

// TestKillMkdirOverWhiteout: rmdir of a merged directory, then mkdir of
// the same name. Killed between removing the whiteout and making the
// directory opaque, the lower children show again: a state that never
// existed. Overlayfs builds the opaque directory in the workdir and swaps
// it with the whiteout (ovl_create_over_whiteout, RENAME_EXCHANGE).
func TestKillMkdirOverWhiteout(t *testing.T) {
	fstest.RequireFUSE(t)
	requireStrace(t)
	runSyscallScenario(t, scenarioNamed(t, "mkdir over whiteout of merged dir"), 0)
}

// TestKillCreateOverWhiteout: unlink of a lower file, then create (or
// symlink) of the same name. Killed after the whiteout is gone and before
// the new file exists, the lower file shows again.
func TestKillCreateOverWhiteout(t *testing.T) {
	fstest.RequireFUSE(t)
	requireStrace(t)
	runSyscallScenario(t, scenarioNamed(t, "create over whiteout of lower file"), 0)
	runSyscallScenario(t, scenarioNamed(t, "symlink over whiteout of lower file"), 0)
}
