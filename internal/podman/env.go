package podman

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/internal/mountinfo"
	"github.com/unionmount/unionmount/internal/rootless"
)

// Program is a mount_program for containers-storage.
type Program struct {
	Name string // for test names and reports
	Path string // absolute
	// FsType is the type a mount of it has in /proc/self/mountinfo.
	FsType string
}

// Env is one isolated podman: its own storage.conf and containers.conf,
// its own storage, run and temporary directories under Dir, and the given
// mount_program; run as root, or as User (rootless) when it is not nil.
//
// Podman 4.3 drops the storage options of storage.conf (mount_program
// among them) when --root or --runroot is on its command line, and then
// falls back to a fuse-overlayfs found in PATH, so the directories are
// set in storage.conf only: graphroot and runroot for root,
// rootless_storage_path and XDG_RUNTIME_DIR for a user.
type Env struct {
	Dir     string
	Program Program
	User    *rootless.User // nil: root
	// FuseMode is the mode of the /dev/fuse a user's commands see
	// (rootless.Sandbox); NewEnv sets 0666, what a rootless mount needs.
	// Podman's pause process keeps the namespaces of the first command,
	// so change it before that.
	FuseMode os.FileMode

	storageConf, containersConf string
	graphRoot, runRoot, tmpDir  string
	runtimeDir                  string
	// callLog is where the wrapper storage.conf names as mount_program
	// writes each call's arguments before it runs Program.
	callLog string
}

// NewEnv writes the configuration of an isolated podman in dir (which the
// user, if any, must own; keep its path short: see shortDir in the tests)
// and registers a cleanup that resets the storage
// (podman system reset -f), stops the rootless pause process, and fails
// the test if a mount under dir or a daemon serving one is left.
func NewEnv(t testing.TB, dir string, prog Program, user *rootless.User) *Env {
	t.Helper()
	e := &Env{
		Dir: dir, Program: prog, User: user, FuseMode: 0o666,
		storageConf:    filepath.Join(dir, "storage.conf"),
		containersConf: filepath.Join(dir, "containers.conf"),
		graphRoot:      filepath.Join(dir, "root"),
		runRoot:        filepath.Join(dir, "runroot"),
		tmpDir:         filepath.Join(dir, "tmp"),
		runtimeDir:     filepath.Join(dir, "xdg"),
		callLog:        filepath.Join(dir, "mount_program.log"),
	}
	for _, d := range []string{e.graphRoot, e.runRoot, e.tmpDir, e.runtimeDir, filepath.Join(dir, "config")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// The wrapper has the program's base name, in case containers-storage
	// goes by it.
	wrapper := filepath.Join(dir, "bin", filepath.Base(prog.Path))
	// Under `make test-uring` unionmount serves its mounts over io_uring.
	extra := ""
	if prog.Name == "unionmount" {
		for _, a := range fstest.URingArgs() {
			extra += " " + a
		}
	}
	script := fmt.Sprintf("#!/bin/sh\n{ for a in \"$@\"; do printf '%%s\\t' \"$a\"; done; echo; } >>%q\nexec %q%s \"$@\"\n", e.callLog, prog.Path, extra)
	if err := os.Mkdir(filepath.Dir(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	storage := fmt.Sprintf(`[storage]
driver = "overlay"
graphroot = %q
runroot = %q
rootless_storage_path = %q

[storage.options.overlay]
mount_program = %q
`, e.graphRoot, e.runRoot, e.graphRoot, wrapper)
	// Explicit ulimits: podman otherwise asks runc for the host's
	// RLIMIT_NPROC, which a container may not raise to (EPERM).
	containers := fmt.Sprintf(`[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
netns = "none"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = %q
`, e.tmpDir)
	for f, content := range map[string]string{e.storageConf: storage, e.containersConf: containers} {
		if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if user != nil {
		user.Chown(t, dir)
	}
	t.Cleanup(func() { e.cleanup(t) })
	return e
}

// MountProgramCalls returns the arguments of every run of the mount
// program so far, oldest first.
func (e *Env) MountProgramCalls(t testing.TB) [][]string {
	t.Helper()
	b, err := os.ReadFile(e.callLog)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var calls [][]string
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		calls = append(calls, strings.Split(strings.TrimSuffix(line, "\t"), "\t"))
	}
	return calls
}

// env is the environment podman runs with.
func (e *Env) env() []string {
	env := []string{
		"CONTAINERS_CONF=" + e.containersConf,
		"CONTAINERS_STORAGE_CONF=" + e.storageConf,
		"XDG_CONFIG_HOME=" + filepath.Join(e.Dir, "config"),
		"XDG_RUNTIME_DIR=" + e.runtimeDir,
	}
	if e.User == nil {
		env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME="+e.Dir, "LANG=C")
	}
	return env
}

// podmanTimeout bounds one podman command; only a hang reaches it.
const podmanTimeout = 2 * time.Minute

// Run runs a command in the environment: podman itself, or for a user
// `podman unshare` scripts. A user's commands run in a sandbox with a 0666
// /dev/fuse, the one a rootless mount needs.
func (e *Env) Run(t testing.TB, name string, args ...string) rootless.Result {
	t.Helper()
	if e.User != nil {
		return e.User.Run(t, rootless.Sandbox{FuseMode: e.FuseMode, Env: e.env()}, name, args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), podmanTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = e.env()
	cmd.Dir = e.Dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: timed out after %v\n%s", name, strings.Join(args, " "), podmanTimeout, stderr.String())
	}
	return rootless.Result{Stdout: stdout.String(), Stderr: stderr.String(), Err: err}
}

// Podman runs podman args....
func (e *Env) Podman(t testing.TB, args ...string) rootless.Result {
	t.Helper()
	return e.Run(t, "podman", args...)
}

// MustPodman runs podman args... and fails the test if it fails; it
// returns the trimmed stdout.
func (e *Env) MustPodman(t testing.TB, args ...string) string {
	t.Helper()
	r := e.Podman(t, args...)
	if r.Err != nil {
		t.Fatalf("podman %s:\n%s", strings.Join(args, " "), r)
	}
	return strings.TrimSpace(r.Stdout)
}

func (e *Env) cleanup(t testing.TB) {
	if r := e.Podman(t, "system", "reset", "--force"); r.Err != nil {
		t.Errorf("podman system reset --force:\n%s", r)
	}
	if e.User != nil {
		e.stopPause(t)
	}
	// Root podman mounts in our namespace: nothing may be left under Dir,
	// and no mount program may still serve one.
	mounts, _ := mountinfo.Self()
	for _, m := range mounts {
		if strings.HasPrefix(m.Mountpoint, e.Dir+"/") {
			t.Errorf("mount left after podman system reset: %s (%s from %s)", m.Mountpoint, m.FSType, m.Source)
			syscall.Unmount(m.Mountpoint, syscall.MNT_DETACH)
		}
	}
	// A daemon exits shortly after its mount goes away.
	deadline := time.Now().Add(10 * time.Second)
	for len(processesMentioning(e.Dir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling for the daemons to exit
	}
	for _, p := range processesMentioning(e.Dir) {
		t.Errorf("process left 10s after podman system reset: %s", p)
	}
}

// stopPause ends the rootless pause process podman keeps (its pid is in
// tmp_dir/pause.pid): it holds the user and mount namespaces in which the
// storage mounts live. It is the user's, started by our podman commands.
func (e *Env) stopPause(t testing.TB) {
	b, err := os.ReadFile(filepath.Join(e.tmpDir, "pause.pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 || !ownedBy(pid, e.User.UID) {
		return
	}
	syscall.Kill(pid, syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Errorf("podman pause process %d did not exit", pid)
			return
		}
		time.Sleep(10 * time.Millisecond) // polling for the exit
	}
}

// ownedBy reports whether process pid runs with real uid uid.
func ownedBy(pid, uid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Uid:" {
			return f[1] == strconv.Itoa(uid)
		}
	}
	return false
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// processesMentioning lists live processes whose command line holds s.
func processesMentioning(s string) []string {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []string
	self := strconv.Itoa(os.Getpid())
	for _, d := range dirs {
		pid := filepath.Base(d)
		if pid == self {
			continue
		}
		b, err := os.ReadFile(d + "/cmdline")
		if err != nil || !bytes.Contains(b, []byte(s)) {
			continue
		}
		if n, _ := strconv.Atoi(pid); !alive(n) {
			continue
		}
		out = append(out, pid+" "+string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
	}
	return out
}
