package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The OCI runtime-spec 1.0 subset unionctl writes.
type (
	ociSpec struct {
		OCIVersion string     `json:"ociVersion"`
		Process    ociProcess `json:"process"`
		Root       ociRoot    `json:"root"`
		Hostname   string     `json:"hostname"`
		Mounts     []ociMount `json:"mounts"`
		Linux      ociLinux   `json:"linux"`
	}
	ociProcess struct {
		Terminal     bool       `json:"terminal"`
		User         ociUser    `json:"user"`
		Args         []string   `json:"args"`
		Env          []string   `json:"env"`
		Cwd          string     `json:"cwd"`
		Capabilities ociCaps    `json:"capabilities"`
		Rlimits      []ociLimit `json:"rlimits,omitempty"`
	}
	ociUser struct {
		UID            int   `json:"uid"`
		GID            int   `json:"gid"`
		AdditionalGids []int `json:"additionalGids,omitempty"`
	}
	ociCaps struct {
		Bounding  []string `json:"bounding"`
		Effective []string `json:"effective"`
		Permitted []string `json:"permitted"`
	}
	ociLimit struct {
		Type string `json:"type"`
		Hard uint64 `json:"hard"`
		Soft uint64 `json:"soft"`
	}
	ociRoot struct {
		Path     string `json:"path"`
		Readonly bool   `json:"readonly"`
	}
	ociMount struct {
		Destination string   `json:"destination"`
		Type        string   `json:"type"`
		Source      string   `json:"source"`
		Options     []string `json:"options,omitempty"`
	}
	ociLinux struct {
		Namespaces    []ociNamespace `json:"namespaces"`
		MaskedPaths   []string       `json:"maskedPaths"`
		ReadonlyPaths []string       `json:"readonlyPaths"`
	}
	ociNamespace struct {
		Type string `json:"type"`
	}
)

// defaultCaps is docker's default capability set.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// Bundle writes an OCI runtime bundle for spec in dir (config.json; the
// root is spec.Rootfs, the mounted union) and returns its path.
func Bundle(dir string, spec Spec) (string, error) {
	uid, gid, groups, home, err := resolveUserIn(spec.Rootfs, spec.User)
	if err != nil {
		return "", err
	}
	env := spec.Env
	if home != "" && !hasKey(env, "HOME") {
		env = append(env, "HOME="+home)
	}
	if !hasKey(env, "HOSTNAME") {
		env = append(env, "HOSTNAME="+spec.Hostname)
	}
	caps := defaultCaps
	if uid != 0 {
		caps = []string{}
	}
	s := ociSpec{
		OCIVersion: "1.0.2",
		Process: ociProcess{
			User:         ociUser{UID: uid, GID: gid, AdditionalGids: groups},
			Args:         spec.Args,
			Env:          env,
			Cwd:          spec.Cwd,
			Capabilities: ociCaps{Bounding: defaultCaps, Effective: caps, Permitted: caps},
			// No rlimits: the container keeps the caller's (raising them
			// needs CAP_SYS_RESOURCE, which a root without it lacks).
		},
		Root:     ociRoot{Path: spec.Rootfs},
		Hostname: spec.Hostname,
		Mounts: []ociMount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: ociLinux{
			Namespaces: []ociNamespace{{"pid"}, {"ipc"}, {"uts"}, {"mount"}},
			MaskedPaths: []string{"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
				"/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"},
			ReadonlyPaths: []string{"/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
	for _, m := range spec.Mounts {
		opts := []string{"rbind", "rprivate"}
		if m.ReadOnly {
			opts = append(opts, "ro")
		}
		s.Mounts = append(s.Mounts, ociMount{Destination: m.Destination, Type: "bind", Source: m.Source, Options: opts})
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("write bundle: %w", err)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		return "", fmt.Errorf("write bundle: %w", err)
	}
	return dir, nil
}

// resolveUserIn resolves a user against the passwd and group files of the
// container root, opened with every symlink kept inside it.
func resolveUserIn(root, spec string) (uid, gid int, groups []int, home string, err error) {
	paths := map[string]string{}
	for _, f := range []string{"etc/passwd", "etc/group"} {
		fd, err := openInRoot(root, f, false, false)
		if err != nil {
			continue // no such file: numeric ids still work
		}
		defer unix.Close(fd)
		paths[f] = fdPath(fd)
	}
	return ResolveUser(spec, paths["etc/passwd"], paths["etc/group"])
}

// RuncProcess is a container run by runc.
type RuncProcess struct {
	cmd     *exec.Cmd
	runc    string
	state   string
	id      string
	Pid     int // of the container's init (runc's child), for kill
	started bool
}

// Started reports whether runc started the container's init.
func (p *RuncProcess) Started() bool { return p.started }

// StartRunc runs `runc run` on the bundle with the caller's stdio, and
// returns once the container's init is running (its pid is known).
func StartRunc(runc, stateDir, bundle, id string, stdin io.Reader, stdout, stderr io.Writer) (*RuncProcess, error) {
	if runc == "" {
		runc = "runc"
	}
	pidFile := filepath.Join(bundle, "init.pid")
	os.Remove(pidFile)
	cmd := exec.Command(runc, "--root", stateDir, "run", "--bundle", bundle, "--pid-file", pidFile, id)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("runc: %w", err)
	}
	p := &RuncProcess{cmd: cmd, runc: runc, state: stateDir, id: id, Pid: cmd.Process.Pid}
	done := make(chan struct{})
	go func() {
		// Only to learn early that runc exited; Wait is called later.
		var info unix.Siginfo
		unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		close(done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(pidFile); err == nil && len(b) > 0 {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				p.Pid, p.started = pid, true
				return p, nil
			}
		}
		select {
		case <-done:
			return p, nil // runc ended already; Wait reports how
		case <-time.After(5 * time.Millisecond): // polling for runc's pid file
		}
	}
	return p, nil
}

// Wait waits for runc and returns the container's exit code, then removes
// runc's state of it.
func (p *RuncProcess) Wait() (int, error) {
	code, err := exitCode(p.cmd.Wait())
	exec.Command(p.runc, "--root", p.state, "delete", "--force", p.id).Run()
	return code, err
}

// Signal sends sig to the container's init.
func (p *RuncProcess) Signal(sig os.Signal) error {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return errors.New("unsupported signal")
	}
	return unix.Kill(p.Pid, s)
}
