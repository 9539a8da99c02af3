// Command unionctl keeps container images and containers on the union
// filesystem, with docker's verbs: an image is a stack of read-only layers
// shared by every image built on them, a container is that stack plus one
// thin writable upper, mounted with unionmount.
//
//	unionctl [--root DIR] [--unionmount PATH] VERB [ARGS]
//
// Images: import, load, save, build, images, history, inspect, tag, rmi.
// Registries: pull, push, login, logout.
// Containers: create, run, start, ps, logs, diff, commit, mount, umount, rm.
// Volumes: volume create|ls|inspect|rm. Rootless: unshare.
// `unionctl VERB --help` shows each.
//
// The store is --root (default /var/lib/unionmount as root, else
// $XDG_DATA_HOME/unionmount); docs/images.md describes its layout. Without
// root, unionctl re-executes itself in a user namespace that maps the
// caller's subordinate ids (/etc/subuid, /etc/subgid), where it acts as
// root (see image/runner).
//
// Exit status: 0 on success, 1 when the operation failed (one line on
// stderr says why and what to do), 2 for bad arguments. run and start -a
// exit with the container's status, or 125 when unionctl itself failed,
// 126 when the command cannot be executed and 127 when it is not found, as
// docker does.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/image/runner"
	"github.com/unionmount/unionmount/image/store"
)

// version is set at build time: go build -ldflags "-X main.version=1.2.3".
var version = "dev"

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == runner.InitArg {
		runner.Init() // the container's first process; never returns
	}
	runner.ContinueInUserNamespace()
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// usageError is a bad command line: exit 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// exitCodeError ends the command with a given status (a container's).
type exitCodeError struct {
	code int
	err  error // printed when not nil
}

func (e *exitCodeError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return fmt.Sprintf("exit status %d", e.code)
}

// app is one invocation: global options, streams, the store.
type app struct {
	root       string
	unionmount string
	runc       string
	stdin      io.Reader
	stdout     io.Writer
	stderr     io.Writer
	self       string // this binary, for the container init and supervisors
	rootless   bool   // not real root: acting as a user namespace's root
	st         *store.Store
	prog       *progress
	quiet      bool
}

// command is one verb.
type command struct {
	name    string
	usage   string // operands, after the verb
	summary string
	// needsStore: the verb works on the store (it is opened first, in a
	// user namespace when rootless).
	needsStore bool
	flags      func(*pflag.FlagSet, *cmdOpts)
	run        func(*app, *cmdOpts, []string) error
	hidden     bool
	// endsInCommand: the operands end in a command line whose flags are
	// its own (run, create, unshare), so flags stop at the first operand.
	// Every other verb takes its flags before or after its operands, as
	// docker does (unionctl save IMAGE -o FILE).
	endsInCommand bool
}

// cmdOpts holds every verb's flag values; each verb defines the ones it
// takes.
type cmdOpts struct {
	quiet, all, size, force, rm, attach, detach, noTrunc, lazy bool
	format, output, layout, message, author, name, workdir, user, hostname,
	runtime, entrypoint, typ, compression, compressionFormat, input string
	env, volumes, volumesFrom []string
	entrypointSet             bool
	build                     buildFlags // build.go
	maxLayerSize              sizeValue
	// registries
	platform, authfile, certDir, username string
	tlsVerify, passwordStdin              bool
}

var commands []*command

func lookupCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// defaultRoot is the store used without --root: the system's as real
// root, else the user's own, where docker and podman users look for it.
func defaultRoot() string {
	return chooseRoot(os.Geteuid() == 0 && !runner.InUserNamespace(), os.Getenv("XDG_DATA_HOME"), os.Getenv("HOME"))
}

// chooseRoot picks the default store: /var/lib/unionmount for real root
// (euid 0 outside any user namespace), else $XDG_DATA_HOME/unionmount,
// else $HOME/.local/share/unionmount (the XDG base directory default,
// also when XDG_DATA_HOME is set but empty or relative, as the spec
// says). "" when there is no home to put it in: --root is then needed.
func chooseRoot(realRoot bool, xdgDataHome, home string) string {
	switch {
	case realRoot:
		return "/var/lib/unionmount"
	case xdgDataHome != "" && filepath.IsAbs(xdgDataHome):
		return filepath.Join(xdgDataHome, "unionmount")
	case home != "" && filepath.IsAbs(home):
		return filepath.Join(home, ".local", "share", "unionmount")
	}
	return ""
}

func defaultUnionmount() string {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "unionmount")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	if p, err := exec.LookPath("unionmount"); err == nil {
		return p
	}
	return ""
}

// run is the whole command: arguments without the program name in, exit
// status out.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	err := a.main(args)
	if err == nil {
		return exitOK
	}
	var ce *exitCodeError
	if errors.As(err, &ce) {
		if ce.err != nil {
			fmt.Fprintf(stderr, "unionctl: %v\n", oneLine(ce.err))
		}
		return ce.code
	}
	fmt.Fprintf(stderr, "unionctl: %v\n", oneLine(err))
	var ue *usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}

func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}

func (a *app) main(args []string) error {
	fs := pflag.NewFlagSet("unionctl", pflag.ContinueOnError)
	fs.SetInterspersed(false)
	fs.SetOutput(io.Discard)
	fs.StringVar(&a.root, "root", defaultRoot(), "store directory")
	fs.StringVar(&a.unionmount, "unionmount", "", "unionmount binary (default: beside unionctl, then $PATH)")
	fs.StringVar(&a.runc, "runc", "runc", "runc binary for --runtime runc")
	help := fs.BoolP("help", "h", false, "show help")
	showVersion := fs.Bool("version", false, "print the version")
	if err := fs.Parse(args); err != nil {
		return usagef("%v (see unionctl --help)", err)
	}
	if *help {
		fmt.Fprint(a.stdout, globalUsage(fs))
		return nil
	}
	if *showVersion {
		fmt.Fprintf(a.stdout, "unionctl %s\n", version)
		return nil
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprint(a.stderr, globalUsage(fs))
		return usagef("no verb given")
	}
	cmd := lookupCommand(rest[0])
	if cmd == nil {
		return usagef("unknown verb %q (see unionctl --help)", rest[0])
	}
	if a.unionmount == "" {
		a.unionmount = defaultUnionmount()
	}
	var err error
	if a.self, err = os.Executable(); err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}

	var o cmdOpts
	cfs := pflag.NewFlagSet("unionctl "+cmd.name, pflag.ContinueOnError)
	cfs.SetInterspersed(!cmd.endsInCommand)
	cfs.SetOutput(io.Discard)
	chelp := cfs.BoolP("help", "h", false, "show help")
	if cmd.flags != nil {
		cmd.flags(cfs, &o)
	}
	if err := cfs.Parse(rest[1:]); err != nil {
		return usagef("%s: %v (see unionctl %s --help)", cmd.name, err, cmd.name)
	}
	if *chelp {
		fmt.Fprint(a.stdout, commandUsage(cmd, cfs))
		return nil
	}
	o.entrypointSet = cfs.Changed("entrypoint")

	if cmd.needsStore {
		if a.root == "" {
			return usagef("no default store: neither XDG_DATA_HOME nor HOME is set to an absolute path; give --root DIR")
		}
		if os.Geteuid() != 0 && !runner.InUserNamespace() {
			// Rootless: do the work as the root of a user namespace that
			// maps our subordinate ids, so layers keep their owners.
			code, err := runner.ReexecInUserNamespace(append([]string{"--root", a.root, "--unionmount", a.unionmount, "--runc", a.runc}, rest...))
			if err != nil {
				return &exitCodeError{code: code, err: err}
			}
			if code != 0 {
				return &exitCodeError{code: code}
			}
			return nil
		}
		a.rootless = runner.InUserNamespace()
		a.quiet = o.quiet
		a.prog = newProgress(a.stderr, o.quiet)
		a.st, err = store.Open(store.Options{
			Root:       a.root,
			Rootless:   a.rootless,
			Unionmount: a.unionmount,
			Progress:   a.prog.report,
			// 0 (the flag's default): the store's free space less a reserve.
			MaxLayerSize: int64(o.maxLayerSize),
		})
		if err != nil {
			return fmt.Errorf("%w (choose another store with --root DIR)", err)
		}
	}
	err = cmd.run(a, &o, cfs.Args())
	if a.prog != nil {
		a.prog.finish()
	}
	return err
}

func globalUsage(fs *pflag.FlagSet) string {
	var b strings.Builder
	b.WriteString("Usage: unionctl [--root DIR] [--unionmount PATH] VERB [ARGS]\n\n")
	b.WriteString("Images and containers on the union filesystem, with docker's verbs.\n\nVerbs:\n")
	var names []string
	for _, c := range commands {
		if !c.hidden {
			names = append(names, c.name)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		c := lookupCommand(n)
		fmt.Fprintf(&b, "  %-9s %s\n", c.name, c.summary)
	}
	b.WriteString("\nGlobal flags:\n")
	b.WriteString(fs.FlagUsages())
	b.WriteString("\nunionctl VERB --help shows a verb's operands and flags. The store layout is in docs/images.md.\n")
	return b.String()
}

func commandUsage(c *command, fs *pflag.FlagSet) string {
	return fmt.Sprintf("Usage: unionctl %s %s\n\n%s\n\nFlags:\n%s", c.name, c.usage, c.summary, fs.FlagUsages())
}

// isTerminal reports whether the stream (an *os.File) is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
