package bench

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/unionmount/unionmount/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// Stack is what every driver mounts for one run.
type Stack struct {
	// Lowers are the read-only layers, topmost first (overlayfs order).
	Lowers []string
	// Merged is a plain directory holding the merged content of Lowers
	// (the plain driver's view). Never written to.
	Merged string
	// Upper and Work are fresh empty directories on the lowers' filesystem.
	Upper, Work string
	// Writes says the case changes the view; the plain driver then works
	// on a copy of Merged in Upper.
	Writes bool
	// NamesOnly says the case only creates, renames and removes names, so
	// the plain driver's copy may hard-link the files instead of copying.
	NamesOnly bool
}

// Driver mounts stacks one way. Adding a driver is one file that calls
// register in an init function.
type Driver interface {
	// Name is the short id used in tables, flags and files.
	Name() string
	// Check returns why the driver cannot run here, or nil.
	Check(env *Env) error
	// Version is one line for the report ("" when unknown).
	Version(env *Env) string
	// Mount mounts st on mnt, an empty directory.
	Mount(env *Env, st Stack, mnt string) (*Mount, error)
}

// optIn is a driver that runs only when --drivers names it; the report
// lists it as skipped with OptIn's reason otherwise. It keeps make bench
// inside its time budget.
type optIn interface {
	OptIn() string
}

// caseLimiter is a driver that runs only the cases RunsCase accepts (a
// variant that changes nothing in the others): its row stays empty there.
type caseLimiter interface {
	RunsCase(name string) bool
}

// runsCase reports whether d runs case c.
func runsCase(d Driver, c *Case) bool {
	if l, ok := d.(caseLimiter); ok {
		return l.RunsCase(c.Name)
	}
	return true
}

// Mount is one mounted stack.
type Mount struct {
	// Dir is the merged view: the mount point, or a plain directory.
	Dir string
	// daemon serves a FUSE mount; nil for the kernel and the plain driver.
	daemon *daemon
	// unmount undoes a mount that has no daemon, or what a daemon's mount
	// needed besides it (run after the daemon has exited).
	unmount func() error
	// as is the user the workload runs as on this mount; nil for root.
	as *Identity
}

// PID is the FUSE daemon's process id, 0 when there is none.
func (m *Mount) PID() int {
	if m.daemon == nil {
		return 0
	}
	return m.daemon.cmd.Process.Pid
}

// Unmount unmounts and, for a FUSE mount, waits for the daemon to exit.
func (m *Mount) Unmount() error {
	var err error
	if m.daemon != nil {
		err = m.daemon.stop()
	}
	if m.unmount != nil {
		err = errors.Join(err, m.unmount())
	}
	return err
}

// drivers holds every registered driver in report order.
var drivers []Driver

func register(d Driver) { drivers = append(drivers, d) }

// Drivers returns the names of all drivers in report order.
func Drivers() []string {
	var names []string
	for _, d := range driverList() {
		names = append(names, d.Name())
	}
	return names
}

// driverList returns the drivers in report order: the baselines first, a
// driver not named here last.
func driverList() []Driver {
	order := map[string]int{"plain": 1, "kernel": 2, "kernel-userns": 3, "fuse-overlayfs": 4, "unionmount": 5,
		"unionmount-uring": 6, "unionmount-nopassthrough": 7, "unionmount-lowerpt": 8, "unionmount-rootless": 9, "unionfs-fuse": 10}
	rank := func(d Driver) int {
		if r, ok := order[d.Name()]; ok {
			return r
		}
		return len(order) + 1
	}
	out := append([]Driver(nil), drivers...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && rank(out[j]) < rank(out[j-1]); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// daemon is a FUSE server process run in the foreground as our child, so
// that its pid is the server's and /proc tells its CPU, memory and fds.
type daemon struct {
	name string
	cmd  *exec.Cmd
	mnt  string
	log  string
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, valid after done
}

// startDaemon runs argv (which must keep the server in the foreground) and
// waits until mnt shows up in the mount table.
func startDaemon(name string, argv []string, mnt, logPath string) (*daemon, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s: daemon log: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, argv[0], err)
	}
	logf.Close()
	d := &daemon{name: name, cmd: cmd, mnt: mnt, log: logPath, done: make(chan struct{})}
	go func() { d.err = cmd.Wait(); close(d.done) }()

	deadline := time.Now().Add(20 * time.Second)
	for {
		if mounted(mnt) {
			return d, nil
		}
		select {
		case <-d.done:
			return nil, fmt.Errorf("%s: exited before mounting (%v): %s", name, d.err, tail(logPath))
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-d.done
			return nil, fmt.Errorf("%s: not mounted after 20s: %s", name, tail(logPath))
		}
	}
}

// stop unmounts with fusermount3 and waits for the daemon to exit.
func (d *daemon) stop() error {
	out, uerr := exec.Command("fusermount3", "-u", d.mnt).CombinedOutput()
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
		unix.Unmount(d.mnt, unix.MNT_DETACH)
		return fmt.Errorf("%s: daemon still running 30s after unmount; killed it", d.name)
	}
	if uerr != nil {
		return fmt.Errorf("%s: fusermount3 -u %s: %v: %s", d.name, d.mnt, uerr, strings.TrimSpace(string(out)))
	}
	if d.err != nil {
		return fmt.Errorf("%s: daemon exited with %v: %s", d.name, d.err, tail(d.log))
	}
	return nil
}

// tail returns the last lines of a log file, for error messages.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	s := strings.TrimSpace(string(b))
	if len(s) > 400 {
		s = "..." + s[len(s)-400:]
	}
	if s == "" {
		return "(no output)"
	}
	return s
}

// mounted reports whether path is a mount point in our mount namespace.
func mounted(path string) bool {
	ok, _ := mountinfo.IsMountpoint(path)
	return ok
}

// forceUnmount detaches whatever is mounted on path (left over from an
// interrupted run).
func forceUnmount(path string) {
	for i := 0; i < 8 && mounted(path); i++ {
		if exec.Command("fusermount3", "-u", "-z", path).Run() != nil {
			unix.Unmount(path, unix.MNT_DETACH)
		}
	}
}

// lookBinary finds a program: an explicit path, or by name on PATH.
func lookBinary(path string, names ...string) (string, error) {
	if path != "" {
		if _, err := os.Stat(path); err != nil {
			return "", err
		}
		return filepath.Abs(path)
	}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH", strings.Join(names, " or "))
}

// needFUSE checks what every FUSE driver needs.
func needFUSE() error {
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("cannot open /dev/fuse (%w); load the fuse module or run as root", err)
	}
	unix.Close(fd)
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return errors.New("fusermount3 not found; install the fuse3 package")
	}
	return nil
}

// versionOf runs a program's version flag and returns the first output
// line that holds want (the first line when want is "").
func versionOf(bin, want string, args ...string) string {
	out, _ := exec.Command(bin, args...).CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for _, l := range lines {
		if strings.Contains(l, want) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}
