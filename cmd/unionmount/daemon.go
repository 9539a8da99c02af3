package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

// The readiness protocol between the command and the daemon it starts.
//
// A Go program cannot fork without exec, so the parent re-executes
// /proc/self/exe with its own arguments and --internal-ready-fd=3, fd 3
// being the write end of a pipe, in a new session (setsid) with stdin,
// stdout and stderr on /dev/null (stderr kept with --debug). The child
// validates again, mounts, and writes one line to the pipe: "ok", or the
// error. Then it closes the pipe and, on success, serves. The parent waits
// for that line (or for EOF, if the child died first) and exits 0 or 1.
// Validation also runs in the parent before the child starts, so usage
// errors are reported synchronously with exit status 2.
const readyOK = "ok"

// daemonize starts the daemon child and waits for its readiness report.
// keepStderr passes our stderr on (for --debug); beware that a caller
// which reads our stderr through a pipe then waits for the daemon too.
func daemonize(args []string, keepStderr bool, stderr io.Writer) error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("create the readiness pipe: %w", err)
	}
	defer r.Close()

	// The hidden flag goes first: args may end in "--" and operands.
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = append([]string{"unionmount", readyFDArg(3)}, args...)
	cmd.ExtraFiles = []*os.File{w} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if f, ok := stderr.(*os.File); ok && keepStderr {
		cmd.Stderr = f
	}
	err = cmd.Start()
	w.Close() // the child holds the only write end now
	if err != nil {
		return fmt.Errorf("start the mount daemon: %w", err)
	}

	msg, err := io.ReadAll(r)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("read the mount daemon's readiness pipe: %w", err)
	}
	switch line := strings.TrimSpace(string(msg)); line {
	case readyOK:
		return cmd.Process.Release()
	case "":
		werr := cmd.Wait()
		return fmt.Errorf("the mount daemon exited without reporting (%v); run with -f --debug to see why", werr)
	default:
		_ = cmd.Wait()
		return errors.New(line)
	}
}

// reportedError is an error the daemon child has already sent through the
// readiness pipe; the parent prints it, so the child does not.
type reportedError struct{ err error }

func (e *reportedError) Error() string { return e.err.Error() }
func (e *reportedError) Unwrap() error { return e.err }

// runDaemonChild is the daemon side: validate, mount, report, serve.
func runDaemonChild(cfg config, logger *log.Logger) error {
	if cfg.readyFD < 3 {
		return usagef("--%s=%d: internal flag, not for use", readyFDFlag, cfg.readyFD)
	}
	syscall.CloseOnExec(cfg.readyFD) // keep it from fusermount3 and friends
	ready := os.NewFile(uintptr(cfg.readyFD), "readiness pipe")
	report := func(err error) {
		line := readyOK
		if err != nil {
			line = strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
		}
		if _, werr := io.WriteString(ready, line+"\n"); werr != nil {
			logger.Printf("write readiness: %v", werr)
		}
		ready.Close()
	}

	// Whoever reads our stderr (with --debug) may go away; a daemon must
	// not die of SIGPIPE for it.
	signal.Ignore(syscall.SIGPIPE)

	if err := validate(&cfg); err != nil {
		report(err)
		return &reportedError{err}
	}
	// Every path is absolute now; do not keep the caller's directory busy.
	if err := os.Chdir("/"); err != nil {
		err = fmt.Errorf("chdir /: %w", err)
		report(err)
		return &reportedError{err}
	}
	if err := mountAndServe(cfg, logger, report); err != nil {
		return &reportedError{err}
	}
	return nil
}

// readyFDArg is the hidden argument that makes a process the daemon child.
func readyFDArg(fd int) string { return "--" + readyFDFlag + "=" + strconv.Itoa(fd) }
