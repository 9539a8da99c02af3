package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/unionmount/unionmount/image"
	"github.com/unionmount/unionmount/image/runner"
	"github.com/unionmount/unionmount/image/store"
)

const superviseArg = "__supervise"

func createFlags(fs *pflag.FlagSet, o *cmdOpts) {
	fs.StringVar(&o.name, "name", "", "container name (default: a generated one)")
	fs.StringArrayVarP(&o.volumes, "volume", "v", nil, "HOST:CTR[:ro] bind mount, or VOLUME:CTR[:ro] named volume (repeatable)")
	fs.StringArrayVar(&o.volumesFrom, "volumes-from", nil, "mount the volumes of this container too (repeatable)")
	fs.StringVarP(&o.workdir, "workdir", "w", "", "working directory in the container")
	fs.StringArrayVarP(&o.env, "env", "e", nil, "K=V environment variable (repeatable)")
	fs.StringVarP(&o.user, "user", "u", "", "user: name, uid, name:group or uid:gid")
	fs.StringVar(&o.hostname, "hostname", "", "host name (default: the short container ID)")
	fs.StringVar(&o.entrypoint, "entrypoint", "", "replace the image's entrypoint")
	fs.StringVar(&o.runtime, "runtime", "", "runtime: built in (default) or runc")
	fs.BoolVar(&o.rm, "rm", false, "remove the container when it exits")
}

func init() {
	commands = append(commands,
		&command{
			name: "create", usage: "[flags] IMAGE [CMD...]", needsStore: true, endsInCommand: true,
			summary: "Create a container: the image's layers plus an empty writable upper.",
			flags:   createFlags, run: cmdCreate,
		},
		&command{
			name: "run", usage: "[flags] IMAGE [CMD...]", needsStore: true, endsInCommand: true,
			summary: "Create a container and run it; exits with the command's status.",
			flags: func(fs *pflag.FlagSet, o *cmdOpts) {
				createFlags(fs, o)
				fs.BoolVarP(&o.detach, "detach", "d", false, "run in the background and print the container ID")
			},
			run: cmdRun,
		},
		&command{
			name: "start", usage: "[-a] CONTAINER...", needsStore: true,
			summary: "Start containers; with -a wait for one and exit with its status.",
			flags:   func(fs *pflag.FlagSet, o *cmdOpts) { fs.BoolVarP(&o.attach, "attach", "a", false, "attach and wait") },
			run:     cmdStart,
		},
		&command{
			name: "ps", usage: "[-a] [-s]", needsStore: true,
			summary: "List containers (running ones unless -a).",
			flags: func(fs *pflag.FlagSet, o *cmdOpts) {
				fs.BoolVarP(&o.all, "all", "a", false, "all containers")
				fs.BoolVarP(&o.size, "size", "s", false, "writable layer size (du of the upper) and virtual size")
				fs.BoolVarP(&o.quiet, "quiet", "q", false, "only IDs")
				fs.BoolVar(&o.noTrunc, "no-trunc", false, "do not shorten")
				fs.StringVar(&o.format, "format", "", "json: one object per line")
			},
			run: cmdPs,
		},
		&command{
			name: "logs", usage: "CONTAINER", needsStore: true,
			summary: "Print the output of a container started in the background.",
			run:     cmdLogs,
		},
		&command{
			name: "rm", usage: "[-f] CONTAINER...", needsStore: true,
			summary: "Remove containers and their writable layers.",
			flags: func(fs *pflag.FlagSet, o *cmdOpts) {
				fs.BoolVarP(&o.force, "force", "f", false, "kill a running container first")
			},
			run: cmdRm,
		},
		&command{
			name: "diff", usage: "CONTAINER", needsStore: true,
			summary: "List a container's changes (A added, C changed, D deleted), read from its upper alone.",
			run:     cmdDiff,
		},
		&command{
			name: "commit", usage: "CONTAINER [NAME[:TAG]]", needsStore: true,
			summary: "Make an image of a container: its upper becomes a new layer.",
			flags: func(fs *pflag.FlagSet, o *cmdOpts) {
				fs.StringVarP(&o.message, "message", "m", "", "commit message (the history comment)")
				fs.StringVarP(&o.author, "author", "a", "", "author")
				fs.BoolVarP(&o.quiet, "quiet", "q", false, "no progress")
			},
			run: cmdCommit,
		},
		&command{
			name: "mount", usage: "CONTAINER", needsStore: true,
			summary: "Mount a container's merged view and print where (root only).",
			run:     cmdMount,
		},
		&command{
			name: "umount", usage: "CONTAINER", needsStore: true,
			summary: "Unmount a container's merged view.",
			run:     cmdUmount,
		},
		&command{
			name: superviseArg, usage: "CONTAINER", needsStore: true, hidden: true,
			summary: "Run a container in the background (started by start and run -d).",
			run:     cmdSupervise,
		},
	)
}

// parseVolume reads HOST:CTR[:ro] (HOST absolute or starting with ".")
// or VOLUME:CTR[:ro].
func parseVolume(s string) (store.Mount, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return store.Mount{}, fmt.Errorf("-v %q: use HOST:CTR[:ro] or VOLUME:CTR[:ro]", s)
	}
	m := store.Mount{Type: "volume", Source: parts[0], Destination: parts[1]}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			m.ReadOnly = true
		case "rw":
		default:
			return m, fmt.Errorf("-v %q: the option must be ro or rw", s)
		}
	}
	if strings.HasPrefix(m.Source, "/") || strings.HasPrefix(m.Source, ".") {
		abs, err := filepath.Abs(m.Source)
		if err != nil {
			return m, err
		}
		m.Type, m.Source = "bind", abs
	}
	if !strings.HasPrefix(m.Destination, "/") {
		return m, fmt.Errorf("-v %q: the container path must be absolute", s)
	}
	return m, nil
}

func (a *app) create(o *cmdOpts, args []string) (*store.Container, error) {
	if len(args) == 0 {
		return nil, usagef("give an IMAGE (and optionally a command)")
	}
	opts := store.CreateOptions{
		Name: o.name, Image: args[0], Cmd: args[1:], Env: o.env, WorkingDir: o.workdir,
		User: o.user, Hostname: o.hostname, VolumesFrom: o.volumesFrom, Runtime: o.runtime,
		AutoRemove: o.rm,
	}
	switch o.runtime {
	case "", "runc":
	default:
		return nil, usagef("--runtime %q: use runc, or leave it out for the built-in runtime", o.runtime)
	}
	if o.runtime == "runc" && a.rootless {
		return nil, fmt.Errorf("--runtime runc needs real root; leave it out to use the built-in rootless runtime")
	}
	if o.entrypointSet {
		opts.Entrypoint = []string{}
		if o.entrypoint != "" {
			opts.Entrypoint = []string{o.entrypoint}
		}
	}
	for _, v := range o.volumes {
		m, err := parseVolume(v)
		if err != nil {
			return nil, usagef("%v", err)
		}
		opts.Mounts = append(opts.Mounts, m)
	}
	for _, e := range o.env {
		if !strings.Contains(e, "=") {
			if v, ok := os.LookupEnv(e); ok {
				opts.Env = append(opts.Env, e+"="+v)
			}
		}
	}
	var env []string
	for _, e := range opts.Env {
		if strings.Contains(e, "=") {
			env = append(env, e)
		}
	}
	opts.Env = env
	return a.st.CreateContainer(opts)
}

func cmdCreate(a *app, o *cmdOpts, args []string) error {
	c, err := a.create(o, args)
	if err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, c.ID)
	return nil
}

func cmdRun(a *app, o *cmdOpts, args []string) error {
	c, err := a.create(o, args)
	if err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			return usagef("run: %v", err)
		}
		return &exitCodeError{code: runner.ExitRunFailed, err: err}
	}
	if o.detach {
		if err := a.startDetached(c); err != nil {
			var ce *exitCodeError
			if errors.As(err, &ce) {
				return err
			}
			return &exitCodeError{code: runner.ExitRunFailed, err: err}
		}
		fmt.Fprintln(a.stdout, c.ID)
		return nil
	}
	return a.attached(c)
}

// attached runs c in the foreground and ends with its status.
func (a *app) attached(c *store.Container) error {
	code, err := a.runContainer(c, a.stdin, a.stdout, a.stderr, nil)
	if c.AutoRemove {
		if cur, lerr := a.st.LookupContainer(c.ID); lerr == nil {
			if rerr := a.st.RemoveContainer(cur, false); rerr != nil && err == nil {
				err = rerr
			}
		}
	}
	if err != nil {
		var ee *runner.ExitError
		if errors.As(err, &ee) {
			return &exitCodeError{code: ee.Code, err: err}
		}
		return &exitCodeError{code: runner.ExitRunFailed, err: err}
	}
	if code != 0 {
		return &exitCodeError{code: code}
	}
	return nil
}

// container is a started container, whichever the runtime.
type container interface {
	Wait() (int, error)
	Signal(os.Signal) error
	Started() bool
}

// runContainer mounts c, runs its command with the given stdio, records
// its state, unmounts and returns the command's exit code. started, when
// set, is called once the command runs and its pid is recorded.
func (a *app) runContainer(c *store.Container, stdin io.Reader, stdout, stderr io.Writer, started func()) (int, error) {
	me := os.Getpid()
	meStart, _ := store.ProcessStart(me)
	c, err := a.st.UpdateContainer(c.ID, func(c *store.Container) error {
		if c.Running() {
			return fmt.Errorf("%w: container %s is running already", image.ErrState, c.Name)
		}
		// Until the command runs, the container's process is this one.
		c.State = store.State{Status: store.StatusRunning, Pid: me, PidStart: meStart, StartedAt: time.Now().UTC()}
		return nil
	})
	if err != nil {
		return runner.ExitRunFailed, err
	}
	code, runErr := a.runMounted(c, stdin, stdout, stderr, started)
	_, uerr := a.st.UpdateContainer(c.ID, func(c *store.Container) error {
		c.State.Status = store.StatusExited
		c.State.Pid, c.State.PidStart = 0, 0
		c.State.ExitCode = code
		c.State.FinishedAt = time.Now().UTC()
		c.State.Error = ""
		if runErr != nil {
			c.State.Error = runErr.Error()
		}
		return nil
	})
	if runErr == nil {
		runErr = uerr
	}
	return code, runErr
}

func (a *app) runMounted(c *store.Container, stdin io.Reader, stdout, stderr io.Writer, started func()) (int, error) {
	mounted, err := a.st.Mount(c)
	if err != nil {
		if a.rootless {
			if f, ferr := os.OpenFile("/dev/fuse", os.O_RDWR, 0); ferr != nil {
				return runner.ExitRunFailed, fmt.Errorf("%v: rootless containers need /dev/fuse readable and writable by you (mode 0666, as udev sets it): %v", err, ferr)
			} else {
				f.Close()
			}
		}
		return runner.ExitRunFailed, err
	}
	if mounted {
		defer a.st.Unmount(c)
	}
	spec := runner.Spec{
		Rootfs: a.st.Merged(c), Args: c.Config.Args, Env: c.Config.Env, Cwd: c.Config.WorkingDir,
		User: c.Config.User, Hostname: c.Config.Hostname,
	}
	for _, m := range c.Mounts {
		src := m.Source
		if m.Type == "volume" {
			src = a.st.VolumePath(m.Source)
		}
		spec.Mounts = append(spec.Mounts, runner.Mount{Source: src, Destination: m.Destination, ReadOnly: m.ReadOnly})
	}
	var proc container
	var pid int
	switch c.Runtime {
	case "runc":
		bundle, err := runner.Bundle(filepath.Join(a.st.ContainerDir(c), "bundle"), spec)
		if err != nil {
			return runner.ExitRunFailed, err
		}
		rp, err := runner.StartRunc(a.runc, filepath.Join(a.st.ContainerDir(c), "runc"), bundle, c.ID, stdin, stdout, stderr)
		if err != nil {
			return runner.ExitRunFailed, err
		}
		proc, pid = rp, rp.Pid
	default:
		p, err := runner.Start(a.self, spec, stdin, stdout, stderr)
		if err != nil {
			return runner.ExitRunFailed, err
		}
		proc, pid = p, p.Pid
	}
	if start, err := store.ProcessStart(pid); err == nil {
		a.st.UpdateContainer(c.ID, func(c *store.Container) error {
			c.State.Pid, c.State.PidStart = pid, start
			return nil
		})
	}
	if started != nil && proc.Started() {
		started()
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				proc.Signal(s)
			case <-done:
				return
			}
		}
	}()
	code, err := proc.Wait()
	close(done)
	return code, err
}

// startDetached starts c under a supervisor process of its own (unionctl
// __supervise) whose output goes to the container's log, and returns once
// the command runs (or failed to).
func (a *app) startDetached(c *store.Container) error {
	logPath := filepath.Join(a.st.ContainerDir(c), "log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("start %s: %w", c.Name, err)
	}
	defer logf.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer readyR.Close()
	cmd := exec.Command(a.self, "--root", a.st.Root(), "--unionmount", a.unionmount, "--runc", a.runc, superviseArg, c.ID)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		readyW.Close()
		return fmt.Errorf("start %s: %w", c.Name, err)
	}
	readyW.Close()
	go cmd.Wait()
	line, _ := bufio.NewReader(readyR).ReadString('\n')
	line = strings.TrimSpace(line)
	switch {
	case line == "ok":
		return nil
	case line == "":
		b, _ := os.ReadFile(logPath)
		return fmt.Errorf("start %s: the supervisor exited: %s", c.Name, strings.TrimSpace(lastLine(string(b))))
	}
	// "CODE message": the command did not start.
	code, msg, _ := strings.Cut(line, " ")
	n, err := strconv.Atoi(code)
	if err != nil {
		n, msg = runner.ExitRunFailed, line
	}
	return &exitCodeError{code: n, err: fmt.Errorf("start %s: %s", c.Name, msg)}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// cmdSupervise runs a container in the background: it says "ok" on fd 3
// once the command runs, then waits and records the exit.
func cmdSupervise(a *app, o *cmdOpts, args []string) error {
	if len(args) != 1 {
		return usagef("%s: give one container", superviseArg)
	}
	ready := os.NewFile(3, "ready")
	c, err := a.st.LookupContainer(args[0])
	if err != nil {
		fmt.Fprintf(ready, "%v\n", oneLine(err))
		return err
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()
	// Tell the parent, in one line, once the command runs, or why it
	// did not start.
	started := false
	code, err := a.runContainer(c, devnull, a.stdout, a.stderr, func() {
		started = true
		fmt.Fprintln(ready, "ok")
	})
	if !started {
		if err == nil {
			err = fmt.Errorf("container %s did not start", c.Name)
		}
		fail := runner.ExitRunFailed
		var ee *runner.ExitError
		if errors.As(err, &ee) {
			fail = ee.Code
		}
		fmt.Fprintf(ready, "%d %v\n", fail, oneLine(err))
	}
	ready.Close()
	if c.AutoRemove {
		if cur, lerr := a.st.LookupContainer(c.ID); lerr == nil {
			a.st.RemoveContainer(cur, false)
		}
	}
	if err != nil {
		return &exitCodeError{code: runner.ExitRunFailed, err: err}
	}
	fmt.Fprintf(a.stderr, "container %s exited with status %d\n", c.Name, code)
	return nil
}

func cmdStart(a *app, o *cmdOpts, args []string) error {
	if len(args) == 0 {
		return usagef("start: give at least one CONTAINER")
	}
	if o.attach && len(args) > 1 {
		return usagef("start: -a attaches to one container")
	}
	for _, ref := range args {
		c, err := a.st.LookupContainer(ref)
		if err != nil {
			return err
		}
		if c.Running() {
			return fmt.Errorf("%w: container %s is running already", image.ErrState, c.Name)
		}
		if o.attach {
			return a.attached(c)
		}
		if err := a.startDetached(c); err != nil {
			return err
		}
		fmt.Fprintln(a.stdout, c.Name)
	}
	return nil
}

// psJSON is a line of `ps --format json`, with docker's keys.
type psJSON struct {
	ID         string `json:"ID"`
	Image      string `json:"Image"`
	Command    string `json:"Command"`
	CreatedAt  string `json:"CreatedAt"`
	RunningFor string `json:"RunningFor"`
	State      string `json:"State"`
	Status     string `json:"Status"`
	Names      string `json:"Names"`
	Size       string `json:"Size,omitempty"`
	SizeRw     int64  `json:"SizeRw,omitempty"`
	SizeRootFs int64  `json:"SizeRootFs,omitempty"`
	Mounts     string `json:"Mounts"`
	ExitCode   int    `json:"ExitCode"`
	Runtime    string `json:"Runtime,omitempty"`
}

// status says what a container is doing, in docker's words.
func status(c *store.Container) (state, text string) {
	switch {
	case c.Running():
		return "running", "Up " + humanDuration(time.Since(c.State.StartedAt))
	case c.State.Status == store.StatusCreated:
		return "created", "Created"
	case c.State.Status == store.StatusRunning:
		// Recorded as running, but its process is gone (the machine
		// rebooted, or the supervisor was killed).
		return "exited", "Exited (unknown)"
	}
	return "exited", fmt.Sprintf("Exited (%d) %s", c.State.ExitCode, ago(c.State.FinishedAt))
}

func cmdPs(a *app, o *cmdOpts, args []string) error {
	if len(args) > 0 {
		return usagef("ps: unexpected %q", args[0])
	}
	cs, err := a.st.Containers()
	if err != nil {
		return err
	}
	header := []string{"CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"}
	if o.size {
		header = append(header, "SIZE")
	}
	var rows [][]string
	var js []psJSON
	for _, c := range cs {
		state, text := status(c)
		if !o.all && state != "running" {
			continue
		}
		id := c.ID
		cmdline := strings.Join(c.Config.Args, " ")
		if !o.noTrunc {
			id = id[:12]
			cmdline = truncate(cmdline, 20)
		}
		row := []string{id, c.ImageName, strconv.Quote(cmdline), ago(c.Created), text, c.Name}
		j := psJSON{ID: id, Image: c.ImageName, Command: strconv.Quote(cmdline), CreatedAt: c.Created.Format(time.RFC3339),
			RunningFor: ago(c.Created), State: state, Status: text, Names: c.Name, ExitCode: c.State.ExitCode, Runtime: c.Runtime}
		var mounts []string
		for _, m := range c.Mounts {
			mounts = append(mounts, m.Source)
		}
		j.Mounts = strings.Join(mounts, ",")
		if o.size {
			rw, virtual, err := a.st.Size(c)
			if err != nil {
				return err
			}
			j.Size = fmt.Sprintf("%s (virtual %s)", humanSize(rw), humanSize(virtual))
			j.SizeRw, j.SizeRootFs = rw, virtual
			row = append(row, j.Size)
		}
		rows = append(rows, row)
		js = append(js, j)
	}
	switch {
	case o.format == "json":
		return jsonLines(a.stdout, js)
	case o.format != "":
		return usagef("ps: --format %q: only json is supported", o.format)
	case o.quiet:
		for _, r := range rows {
			fmt.Fprintln(a.stdout, r[0])
		}
		return nil
	}
	return table(a.stdout, header, rows)
}

func cmdLogs(a *app, o *cmdOpts, args []string) error {
	if len(args) != 1 {
		return usagef("logs: give one CONTAINER")
	}
	c, err := a.st.LookupContainer(args[0])
	if err != nil {
		return err
	}
	f, err := os.Open(filepath.Join(a.st.ContainerDir(c), "log"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(a.stdout, f)
	return err
}

func cmdRm(a *app, o *cmdOpts, args []string) error {
	if len(args) == 0 {
		return usagef("rm: give at least one CONTAINER")
	}
	var errs []error
	for _, ref := range args {
		c, err := a.st.LookupContainer(ref)
		if err == nil {
			err = a.st.RemoveContainer(c, o.force)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintln(a.stdout, ref)
	}
	return errors.Join(errs...)
}

func cmdDiff(a *app, o *cmdOpts, args []string) error {
	if len(args) != 1 {
		return usagef("diff: give one CONTAINER")
	}
	c, err := a.st.LookupContainer(args[0])
	if err != nil {
		return err
	}
	changes, err := a.st.Diff(c)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(a.stdout)
	for _, ch := range changes {
		fmt.Fprintln(w, ch)
	}
	return w.Flush()
}

func cmdCommit(a *app, o *cmdOpts, args []string) error {
	if len(args) < 1 || len(args) > 2 {
		return usagef("commit: give CONTAINER and optionally NAME[:TAG]")
	}
	var names []string
	if len(args) == 2 {
		r, err := image.ParseReference(args[1])
		if err != nil {
			return usagef("commit: %v", err)
		}
		names = []string{r.String()}
	}
	c, err := a.st.LookupContainer(args[0])
	if err != nil {
		return err
	}
	img, err := a.st.Commit(c, names, store.CommitOptions{Message: o.message, Author: o.author})
	if err != nil {
		return err
	}
	a.prog.finish()
	fmt.Fprintln(a.stdout, img.ID)
	return nil
}

func cmdMount(a *app, o *cmdOpts, args []string) error {
	if len(args) != 1 {
		return usagef("mount: give one CONTAINER")
	}
	if a.rootless {
		return errors.New("mount needs root: a rootless mount would live in a private namespace that ends with this command; run the container instead")
	}
	c, err := a.st.LookupContainer(args[0])
	if err != nil {
		return err
	}
	if _, err := a.st.Mount(c); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, a.st.Merged(c))
	return nil
}

func cmdUmount(a *app, o *cmdOpts, args []string) error {
	if len(args) != 1 {
		return usagef("umount: give one CONTAINER")
	}
	c, err := a.st.LookupContainer(args[0])
	if err != nil {
		return err
	}
	if c.Running() {
		return fmt.Errorf("%w: container %s is running: its union stays mounted until it exits", image.ErrInUse, c.Name)
	}
	if err := a.st.Unmount(c); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, c.Name)
	return nil
}

// containerInspect is `inspect` of a container, with docker's main keys.
type containerInspect struct {
	ID          string          `json:"Id"`
	Name        string          `json:"Name"`
	Created     string          `json:"Created"`
	Image       string          `json:"Image"`
	ImageName   string          `json:"ImageName"`
	Path        string          `json:"Path"`
	Args        []string        `json:"Args"`
	State       store.State     `json:"State"`
	Config      store.RunConfig `json:"Config"`
	Mounts      []store.Mount   `json:"Mounts"`
	Runtime     string          `json:"Runtime"`
	GraphDriver graphDriver     `json:"GraphDriver"`
}

func (a *app) inspectContainer(c *store.Container) containerInspect {
	rt := c.Runtime
	if rt == "" {
		rt = "builtin"
	}
	out := containerInspect{
		ID: c.ID, Name: c.Name, Created: c.Created.Format(time.RFC3339Nano), Image: c.Image.String(),
		ImageName: c.ImageName, Args: c.Config.Args, State: c.State, Config: c.Config, Mounts: c.Mounts, Runtime: rt,
		GraphDriver: graphDriver{Name: "unionmount", Data: map[string]string{
			"LowerDir":  strings.Join(a.st.Lowers(c), ":"),
			"UpperDir":  a.st.Upper(c),
			"WorkDir":   a.st.Work(c),
			"MergedDir": a.st.Merged(c),
		}},
	}
	if len(c.Config.Args) > 0 {
		out.Path, out.Args = c.Config.Args[0], c.Config.Args[1:]
	}
	if out.Mounts == nil {
		out.Mounts = []store.Mount{}
	}
	return out
}
