// Package runner runs a container's command on its mounted union.
//
// The built-in runtime re-executes the calling binary with a hidden verb
// (InitArg) in new mount, PID, UTS and IPC namespaces. That child (Init)
// makes its mounts private, mounts /proc, a minimal /dev (tmpfs with the
// host's null, zero, full, random, urandom and tty bound in, devpts, shm),
// /sys read-only and the volumes (bind mounts: writes there bypass the
// union), sets the hostname, pivots into the union, switches to the
// container user and execs the command, which is PID 1 of its namespace.
// Every mount target is resolved inside the root with
// openat2(RESOLVE_IN_ROOT), so a symlink in the container cannot send a
// mount outside it.
//
// Rootless, the whole unionctl process first moves into a user namespace
// that maps the caller to root and their subordinate ids (/etc/subuid,
// /etc/subgid, via newuidmap and newgidmap) to 1..N (ReexecInUserNamespace),
// so layers unpack with their owners and the union is mounted there by the
// namespace's root; the container then runs as above inside it.
//
// The runc runtime writes an OCI runtime bundle whose root is the union
// mount and runs `runc run` on it (Runc).
package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// InitArg is the hidden first argument that makes the binary run Init.
const InitArg = "__container-init"

// Exit codes of a container that could not run its command (docker's).
const (
	ExitRunFailed      = 125 // the runtime failed before the command started
	ExitCannotInvoke   = 126 // the command exists but cannot be executed
	ExitCommandMissing = 127 // the command was not found
)

// Mount is a bind mount into the container.
type Mount struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	ReadOnly    bool   `json:"read_only,omitempty"`
}

// Spec is what to run and where.
type Spec struct {
	Rootfs   string   `json:"rootfs"` // the mounted union
	Args     []string `json:"args"`
	Env      []string `json:"env"`
	Cwd      string   `json:"cwd"`
	User     string   `json:"user,omitempty"` // name, uid, name:group, uid:gid
	Hostname string   `json:"hostname"`
	Mounts   []Mount  `json:"mounts"`
}

// Process is a started container.
type Process struct {
	cmd    *exec.Cmd
	errR   *os.File
	Pid    int
	failed string // what Init reported before exec
}

// ExitError is a container that ended with a non-zero status, or could
// not start its command (Code 126, 127).
type ExitError struct {
	Code int
	Msg  string // set when the command did not start
}

func (e *ExitError) Error() string {
	if e.Msg != "" {
		return e.Msg
	}
	return fmt.Sprintf("exit status %d", e.Code)
}

// Start starts spec with the built-in runtime: self (the unionctl binary)
// is re-executed as InitArg in new namespaces. The child dies with the
// caller (PR_SET_PDEATHSIG). It returns once the command is exec'ed or
// failed to be.
func Start(self string, spec Spec, stdin io.Reader, stdout, stderr io.Writer) (*Process, error) {
	specR, specW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start container: %w", err)
	}
	defer specR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		specW.Close()
		return nil, fmt.Errorf("start container: %w", err)
	}
	cmd := exec.Command(self, InitArg)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.ExtraFiles = []*os.File{specR, errW}
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
		Pdeathsig:  syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		specW.Close()
		errR.Close()
		errW.Close()
		return nil, fmt.Errorf("start container: %w", err)
	}
	errW.Close()
	p := &Process{cmd: cmd, errR: errR, Pid: cmd.Process.Pid}
	err = json.NewEncoder(specW).Encode(spec)
	specW.Close()
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		errR.Close()
		return nil, fmt.Errorf("start container: send spec: %w", err)
	}
	// The error pipe is close-on-exec in the child: EOF means the
	// command is running; a line means Init failed.
	msg, _ := io.ReadAll(errR)
	errR.Close()
	p.failed = strings.TrimSpace(string(msg))
	return p, nil
}

// Wait waits for the container to end and returns its exit code: the
// command's status, 128+N for a signal, or 125-127 when it did not start
// (with an *ExitError saying why).
func (p *Process) Wait() (int, error) {
	err := p.cmd.Wait()
	if p.failed != "" {
		code, msg, _ := strings.Cut(p.failed, " ")
		n, cerr := strconv.Atoi(code)
		if cerr != nil {
			n, msg = ExitRunFailed, p.failed
		}
		return n, &ExitError{Code: n, Msg: msg}
	}
	return exitCode(err)
}

func exitCode(err error) (int, error) {
	if err == nil {
		return 0, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	return ExitRunFailed, err
}

// Signal sends sig to the container's init.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Started reports whether the command was exec'ed (Wait says why not).
func (p *Process) Started() bool { return p.failed == "" }

// initFail reports why Init could not exec the command, on the error pipe
// (fd 4), and exits.
func initFail(code int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	f := os.NewFile(4, "errpipe")
	if f != nil {
		fmt.Fprintf(f, "%d %s\n", code, msg)
	}
	os.Exit(code)
}

// Init is the container's first process (the binary run as InitArg). It
// never returns: it execs the command or exits with 125-127.
func Init() {
	var spec Spec
	if err := json.NewDecoder(os.NewFile(3, "spec")).Decode(&spec); err != nil {
		initFail(ExitRunFailed, "container init: read spec: %v", err)
	}
	unix.CloseOnExec(4)
	if err := setupRoot(&spec); err != nil {
		initFail(ExitRunFailed, "container init: %v", err)
	}
	uid, gid, groups, home, err := resolveUser(spec.User)
	if err != nil {
		initFail(ExitRunFailed, "container init: %v", err)
	}
	if err := os.MkdirAll(spec.Cwd, 0o755); err != nil {
		initFail(ExitRunFailed, "container init: working directory %s: %v", spec.Cwd, err)
	}
	// Setgroups is denied in a user namespace that maps only the caller
	// (setgroups "deny"); root keeps its groups then.
	if err := unix.Setgroups(groups); err != nil && uid != 0 {
		initFail(ExitRunFailed, "container init: setgroups: %v", err)
	}
	if err := unix.Setresgid(gid, gid, gid); err != nil {
		initFail(ExitRunFailed, "container init: setgid %d: %v", gid, err)
	}
	if err := unix.Setresuid(uid, uid, uid); err != nil {
		initFail(ExitRunFailed, "container init: setuid %d: %v", uid, err)
	}
	if err := unix.Chdir(spec.Cwd); err != nil {
		initFail(ExitCannotInvoke, "container init: working directory %s: %v", spec.Cwd, err)
	}
	env := spec.Env
	if home != "" && !hasKey(env, "HOME") {
		env = append(env, "HOME="+home)
	}
	if !hasKey(env, "HOSTNAME") {
		env = append(env, "HOSTNAME="+spec.Hostname)
	}
	path, err := lookPath(spec.Args[0], env)
	if err != nil {
		initFail(ExitCommandMissing, "%v", err)
	}
	err = unix.Exec(path, spec.Args, env)
	code := ExitCannotInvoke
	if errors.Is(err, unix.ENOENT) {
		code = ExitCommandMissing
	}
	initFail(code, "exec %s: %v", spec.Args[0], err)
}

func hasKey(env []string, k string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, k+"=") {
			return true
		}
	}
	return false
}

// lookPath finds the command in the container's PATH (from its env, not
// ours).
func lookPath(cmd string, env []string) (string, error) {
	if strings.Contains(cmd, "/") {
		return cmd, nil
	}
	pathVar := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathVar = v
		}
	}
	for _, dir := range strings.Split(pathVar, ":") {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + cmd
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Mode&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec %q: executable file not found in $PATH", cmd)
}
