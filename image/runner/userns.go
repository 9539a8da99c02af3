package runner

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// usernsEnv marks the stages of ReexecInUserNamespace in the child's
// environment: "wait" (started in the new namespace, waiting for its id
// mapping) and "ready" (re-executed as the namespace's root).
const usernsEnv = "_UNIONCTL_USERNS"

// InUserNamespace reports whether the process runs in a user namespace
// other than the initial one.
func InUserNamespace() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return !(len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295")
}

// ContinueInUserNamespace is the first thing main calls. In a child of
// ReexecInUserNamespace that waits for its id mapping, it waits (fd 3),
// then executes itself again: capabilities in a user namespace are
// granted at execve as its root, and at the first execve the child's ids
// were not mapped yet. Otherwise it returns at once.
func ContinueInUserNamespace() {
	switch os.Getenv(usernsEnv) {
	case "wait":
		sync := os.NewFile(3, "sync")
		var b [1]byte
		n, _ := sync.Read(b[:])
		sync.Close()
		if n != 1 {
			os.Exit(ExitRunFailed) // the parent failed to map our ids and said why
		}
		os.Setenv(usernsEnv, "ready")
		self, err := os.Executable()
		if err != nil {
			self = "/proc/self/exe"
		}
		err = unix.Exec("/proc/self/exe", append([]string{self}, os.Args[1:]...), os.Environ())
		fmt.Fprintf(os.Stderr, "unionctl: enter user namespace: exec: %v\n", err)
		os.Exit(ExitRunFailed)
	case "ready":
		os.Unsetenv(usernsEnv)
	}
}

// IDRange is a subordinate id range from /etc/subuid or /etc/subgid.
type IDRange struct{ Start, Count int }

// SubIDs returns the first range of /etc/subuid (or subgid) for the user
// (by name or uid).
func SubIDs(file, name string, id int) (IDRange, bool) {
	f, err := os.Open(file)
	if err != nil {
		return IDRange{}, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(p) != 3 || (p[0] != name && p[0] != strconv.Itoa(id)) {
			continue
		}
		start, err1 := strconv.Atoi(p[1])
		count, err2 := strconv.Atoi(p[2])
		if err1 == nil && err2 == nil && count > 0 {
			return IDRange{start, count}, true
		}
	}
	return IDRange{}, false
}

// ReexecInUserNamespace runs this binary again with args in a new user and
// mount namespace where the caller is root and their subordinate ids (if
// /etc/subuid and /etc/subgid give them some) are 1..N, and returns its
// exit code. Signals SIGINT and SIGTERM are passed on.
func ReexecInUserNamespace(args []string) (int, error) {
	u, err := user.Current()
	name := ""
	if err == nil {
		name = u.Username
	}
	uid, gid := os.Getuid(), os.Getgid()
	subuid, okU := SubIDs("/etc/subuid", name, uid)
	subgid, okG := SubIDs("/etc/subgid", name, uid)

	syncR, syncW, err := os.Pipe()
	if err != nil {
		return ExitRunFailed, fmt.Errorf("enter user namespace: %w", err)
	}
	defer syncW.Close()
	cmd := exec.Command("/proc/self/exe", args...)
	if self, err := os.Executable(); err == nil {
		cmd.Args[0] = self
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), usernsEnv+"=wait")
	cmd.ExtraFiles = []*os.File{syncR}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		Pdeathsig:  syscall.SIGKILL,
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		syncR.Close()
		return ExitRunFailed, fmt.Errorf("enter user namespace: %w (is unprivileged user namespace creation allowed? sysctl kernel.unprivileged_userns_clone)", err)
	}
	syncR.Close()
	pid := cmd.Process.Pid
	if okU && okG {
		err = runMap("newuidmap", pid, uid, subuid)
		if err == nil {
			err = runMap("newgidmap", pid, gid, subgid)
		}
	} else {
		err = writeSingleMap(pid, uid, gid)
	}
	if err != nil {
		syncW.Close()
		cmd.Wait()
		return ExitRunFailed, err
	}
	syncW.Write([]byte{1})
	syncW.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			cmd.Process.Signal(s)
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return 128 + int(ws.Signal()), nil
				}
				return ee.ExitCode(), nil
			}
			if err != nil {
				return ExitRunFailed, err
			}
			return 0, nil
		}
	}
}

func runMap(tool string, pid, id int, r IDRange) error {
	out, err := exec.Command(tool, strconv.Itoa(pid), "0", strconv.Itoa(id), "1",
		"1", strconv.Itoa(r.Start), strconv.Itoa(r.Count)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("enter user namespace: %s: %w: %s (check your range in /etc/sub%sid)",
			tool, err, bytes.TrimSpace(out), map[string]string{"newuidmap": "u", "newgidmap": "g"}[tool])
	}
	return nil
}

// writeSingleMap maps only the caller to root: without subordinate ids,
// layers owned by other ids cannot be unpacked.
func writeSingleMap(pid, uid, gid int) error {
	p := "/proc/" + strconv.Itoa(pid)
	if err := os.WriteFile(p+"/uid_map", []byte(fmt.Sprintf("0 %d 1\n", uid)), 0); err != nil {
		return fmt.Errorf("enter user namespace: uid_map: %w", err)
	}
	if err := os.WriteFile(p+"/setgroups", []byte("deny"), 0); err != nil {
		return fmt.Errorf("enter user namespace: setgroups: %w", err)
	}
	if err := os.WriteFile(p+"/gid_map", []byte(fmt.Sprintf("0 %d 1\n", gid)), 0); err != nil {
		return fmt.Errorf("enter user namespace: gid_map: %w", err)
	}
	return nil
}
