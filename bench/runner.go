package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Env is one benchmark run's settings and places.
type Env struct {
	Cfg Config

	data    string // absolute data directory
	scratch string // per-run upper, work and mount point live here
	logs    string // daemon logs

	// owner owns the generated data: the user of the rootless drivers
	// (Config.User), so that they can write where root-run drivers do.
	// nil when that user does not exist here.
	owner    *Identity
	ownerErr error

	umOnce sync.Once
	umBin  string
	umErr  error
}

// Identity is a user the workload runs as.
type Identity struct {
	Name     string
	UID, GID int
}

func (id *Identity) String() string { return fmt.Sprintf("%s (%d:%d)", id.Name, id.UID, id.GID) }

// lookupIdentity finds a user by name.
func lookupIdentity(name string) (*Identity, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("user %q: %w; pass --user with an existing non-root user", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if uid == 0 {
		return nil, fmt.Errorf("user %q is root; pass --user with a non-root user", name)
	}
	return &Identity{Name: name, UID: uid, GID: gid}, nil
}

// unionmountBin finds bin/unionmount: the flag, else beside this program,
// else on PATH.
func (e *Env) unionmountBin() (string, error) {
	e.umOnce.Do(func() {
		if e.Cfg.UnionmountBin == "" {
			if self, err := os.Executable(); err == nil {
				beside := filepath.Join(filepath.Dir(self), "unionmount")
				if _, err := os.Stat(beside); err == nil {
					e.umBin = beside
					return
				}
			}
		}
		e.umBin, e.umErr = lookBinary(e.Cfg.UnionmountBin, "unionmount")
		if e.umErr != nil {
			e.umErr = fmt.Errorf("%w; run make build or pass --unionmount", e.umErr)
		}
	})
	return e.umBin, e.umErr
}

// Case is one measured scenario: a dataset to mount and the timed work to
// do in the merged view.
type Case struct {
	Name  string // id used in --cases
	Group string // the chart and report section it belongs to
	About string // one line for the report

	Data *Dataset
	// Bottom, when > 0, mounts only the bottom Bottom layers of Data.
	Bottom int
	// Cold drops the page cache, dentries and inodes before mounting.
	Cold bool
	// Writes makes the plain driver work on a copy of the merged tree;
	// NamesOnly lets that copy hard-link files (the case never changes an
	// existing file's data or metadata).
	Writes, NamesOnly bool
	// Prepare, if set, makes extra inputs once (after Data is built).
	Prepare func(env *Env) error
	// Run does the work, timing sections with r.Time.
	Run func(r *Run) error
}

// Sample is one timed section of a run.
type Sample struct {
	Metric string  // unique across cases: a row of the report
	Series string  // scaling curves: metrics of one series share a line chart
	X      float64 // the series' x value (layers, bytes)
	Ops    int64   // operations timed, for a per-operation figure
	Bytes  int64   // bytes moved, for a throughput figure
	// Check is a summary of the result (entry counts, ...) that must be the
	// same for every driver; the report flags any difference.
	Check string
	Wall  time.Duration // monotonic wall time
	CPU   time.Duration // the FUSE daemon's user+system time over Wall
}

// Run is one mounted case: what its Run function works with.
type Run struct {
	Env   *Env
	Dir   string // the merged view
	Stack Stack
	Data  *Dataset

	// as is the user the workload runs as; nil for root.
	as      *Identity
	pid     int
	samples []Sample
}

// Owner is the user and group ids that the workload's chown gives files:
// 1000:1000 as root; a user can only give files to itself.
func (r *Run) Owner() (uid, gid int) {
	if r.as != nil {
		return r.as.UID, r.as.GID
	}
	return 1000, 1000
}

// command is a tool started by the workload: as the workload's user.
func (r *Run) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	if r.as != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(r.as.UID), Gid: uint32(r.as.GID)}}
	}
	return cmd
}

// tool runs a program as the workload's user and turns a failure into an
// error with its output.
func (r *Run) tool(name string, args ...string) error {
	return toolErr(r.command(name, args...))
}

// Time runs fn as the timed section s. fn may fill s.Ops, s.Bytes, s.Check.
func (r *Run) Time(s Sample, fn func(s *Sample) error) error {
	var cpu0 time.Duration
	if r.pid != 0 {
		cpu0, _ = procCPU(r.pid)
	}
	t0 := time.Now()
	err := fn(&s)
	s.Wall = time.Since(t0)
	if r.pid != 0 {
		if cpu1, err := procCPU(r.pid); err == nil {
			s.CPU = cpu1 - cpu0
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", s.Metric, err)
	}
	r.samples = append(r.samples, s)
	return nil
}

// Path joins a slash path onto the merged view.
func (r *Run) Path(rel string) string { return filepath.Join(r.Dir, rel) }

// RunResult is one (case, repetition, driver).
type RunResult struct {
	Case    string   `json:"case"`
	Group   string   `json:"group"`
	Driver  string   `json:"driver"`
	Rep     int      `json:"rep"`
	Samples []Sample `json:"samples"`
	PeakRSS int64    `json:"peak_rss_bytes,omitempty"` // the daemon's VmHWM at the end
	FDs     int      `json:"fds,omitempty"`            // the daemon's open fds at the end
	Err     string   `json:"error,omitempty"`
}

// DriverStatus says whether a driver ran.
type DriverStatus struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	Skipped string `json:"skipped,omitempty"` // the reason it did not run
}

// CaseStatus records a case that did not run at all.
type CaseStatus struct {
	Name    string `json:"name"`
	Skipped string `json:"skipped"`
}

// Results is everything a benchmark run measured.
type Results struct {
	Config   Config         `json:"config"`
	Machine  Machine        `json:"machine"`
	Drivers  []DriverStatus `json:"drivers"`
	Cases    []*Case        `json:"-"`
	Skipped  []CaseStatus   `json:"skipped_cases,omitempty"`
	Runs     []RunResult    `json:"runs"`
	Started  time.Time      `json:"started"`
	Duration time.Duration  `json:"duration_ns"`
}

// Measure prepares the data, runs every selected case on every available
// driver and returns the measurements. Progress goes to progress, one
// line rewritten in place when it is a terminal.
func Measure(ctx context.Context, cfg Config, progress io.Writer) (*Results, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	data, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	env := &Env{Cfg: cfg, data: data, scratch: filepath.Join(data, "run"), logs: filepath.Join(data, "logs")}
	for _, d := range []string{env.scratch, env.logs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("data directory: %w", err)
		}
	}
	// An interrupted run may have left its scratch behind.
	if err := os.RemoveAll(filepath.Join(env.scratch, "trash")); err != nil {
		return nil, fmt.Errorf("clean scratch: %w", err)
	}
	env.owner, env.ownerErr = lookupIdentity(cfg.User)
	res := &Results{Config: cfg, Machine: probeMachine(), Started: time.Now()}
	res.Machine.DataFS = fsType(data)
	p := newProgress(progress)

	if unknown := unknownNames(cfg.Drivers, Drivers()); unknown != "" {
		return nil, fmt.Errorf("--drivers: unknown %s; known: %s", unknown, strings.Join(Drivers(), ", "))
	}
	all := Cases(cfg.Sizes)
	if unknown := unknownNames(cfg.Cases, caseNames(all)); unknown != "" {
		return nil, fmt.Errorf("--cases: unknown %s; known: %s", unknown, strings.Join(caseNames(all), ", "))
	}

	// Drivers.
	var active []Driver
	want := selector(cfg.Drivers)
	for _, d := range driverList() {
		if !want(d.Name()) {
			continue
		}
		st := DriverStatus{Name: d.Name(), Version: d.Version(env)}
		if o, ok := d.(optIn); ok && len(cfg.Drivers) == 0 {
			st.Skipped = o.OptIn()
		} else if err := d.Check(env); err != nil {
			st.Skipped = err.Error()
		} else {
			active = append(active, d)
		}
		res.Drivers = append(res.Drivers, st)
	}
	if len(active) == 0 {
		return res, errors.New("no driver can run here (see the skip reasons in the report)")
	}

	// Cases and their data.
	wantCase := selector(cfg.Cases)
	var cases []*Case
	built := map[*Dataset]error{}
	for _, c := range all {
		if !wantCase(c.Name) {
			continue
		}
		if c.Cold && os.Geteuid() != 0 {
			res.Skipped = append(res.Skipped, CaseStatus{c.Name, "needs root to drop caches"})
			continue
		}
		err, done := built[c.Data]
		if !done {
			p.say("preparing data: %s", c.Data.Name)
			err = c.Data.prepare(env)
			built[c.Data] = err
		}
		if err == nil && c.Prepare != nil {
			p.say("preparing data: %s", c.Name)
			err = c.Prepare(env)
		}
		if err != nil {
			res.Skipped = append(res.Skipped, CaseStatus{c.Name, err.Error()})
			continue
		}
		cases = append(cases, c)
	}
	res.Cases = cases
	unix.Sync()

	total := 0
	for _, c := range cases {
		for _, d := range active {
			if runsCase(d, c) {
				total += cfg.Reps
			}
		}
	}
	step := 0
	for _, c := range cases {
		var here []Driver
		for _, d := range active {
			if runsCase(d, c) {
				here = append(here, d)
			}
		}
		for rep := 0; rep < cfg.Reps; rep++ {
			for _, d := range interleave(here, rep) {
				if err := ctx.Err(); err != nil {
					res.Duration = time.Since(res.Started)
					p.done()
					return res, err
				}
				step++
				p.step(step, total, "%s rep %d/%d %s", c.Name, rep+1, cfg.Reps, d.Name())
				rr := runOne(env, c, d)
				rr.Rep = rep
				if rr.Err != "" {
					p.say("%s on %s: %s", c.Name, d.Name(), rr.Err)
				}
				res.Runs = append(res.Runs, rr)
			}
		}
		// Delete the case's leftovers and let the filesystem settle
		// before the next case.
		if err := os.RemoveAll(filepath.Join(env.scratch, "trash")); err != nil {
			p.say("clean scratch: %v", err)
		}
		unix.Sync()
	}
	p.done()
	res.Duration = time.Since(res.Started)
	return res, nil
}

// interleave is the order the drivers run in for repetition rep: all of
// them one after another, the start rotated by one each repetition (A B C,
// B C A, C A B), so that over as many repetitions as drivers each driver
// runs once in each position and drift on the machine hits all alike.
func interleave[T any](drivers []T, rep int) []T {
	n := len(drivers)
	out := make([]T, 0, n)
	for i := range n {
		out = append(out, drivers[(i+rep)%n])
	}
	return out
}

// runOne mounts c's stack with d, runs it and unmounts.
func runOne(env *Env, c *Case, d Driver) (rr RunResult) {
	rr = RunResult{Case: c.Name, Group: c.Group, Driver: d.Name()}
	dir := filepath.Join(env.scratch, d.Name())
	forceUnmount(filepath.Join(dir, "mnt"))
	forceUnmount(dir)
	if err := os.RemoveAll(dir); err != nil {
		rr.Err = fmt.Sprintf("clean scratch: %v", err)
		return rr
	}
	st := Stack{Merged: c.Data.Merged(), Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work"), Writes: c.Writes, NamesOnly: c.NamesOnly}
	first := 0
	if c.Bottom > 0 {
		first = c.Data.Layers - c.Bottom
	}
	for i := first; i < c.Data.Layers; i++ {
		st.Lowers = append(st.Lowers, c.Data.Layer(i))
	}
	mnt := filepath.Join(dir, "mnt")
	for _, p := range []string{st.Upper, st.Work, mnt} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			rr.Err = err.Error()
			return rr
		}
	}
	// Keep what the run wrote until the case is over: deleting a 1 GiB
	// file here would make the next run's fsyncs wait for its discard.
	defer func() {
		trash := filepath.Join(env.scratch, "trash")
		os.MkdirAll(trash, 0o755)
		if os.Rename(dir, filepath.Join(trash, fmt.Sprintf("%s-%d", d.Name(), time.Now().UnixNano()))) != nil {
			os.RemoveAll(dir)
		}
	}()

	if c.Cold {
		if err := dropCaches(); err != nil {
			rr.Err = err.Error()
			return rr
		}
	}
	m, err := d.Mount(env, st, mnt)
	if err != nil {
		rr.Err = err.Error()
		return rr
	}
	// Let writeback from the setup settle before the clock runs (not in
	// quick mode: on a busy machine sync waits for everyone's writeback).
	if !c.Cold && !env.Cfg.Quick {
		unix.Sync()
	}
	r := &Run{Env: env, Dir: m.Dir, Stack: st, Data: c.Data, as: m.as, pid: m.PID()}
	runErr := asUser(m.as, func() error { return c.Run(r) })
	rr.Samples = r.samples
	if pid := m.PID(); pid != 0 {
		rr.PeakRSS, _ = procPeakRSS(pid)
		rr.FDs, _ = procFDs(pid)
	}
	umErr := m.Unmount()
	switch {
	case runErr != nil:
		rr.Err = runErr.Error()
	case umErr != nil:
		rr.Err = umErr.Error()
	}
	return rr
}

// dropCaches writes back dirty data and drops the page cache, dentries and
// inodes, so the next mount starts cold.
func dropCaches() error {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		return fmt.Errorf("drop caches: %w (needs root)", err)
	}
	return nil
}

// runTool runs a program and turns a failure into an error with its output.
func runTool(name string, args ...string) error {
	return toolErr(exec.Command(name, args...))
}

func toolErr(cmd *exec.Cmd) error {
	out, err := cmd.CombinedOutput()
	if err != nil {
		s := strings.TrimSpace(string(out))
		if len(s) > 300 {
			s = s[:300] + "..."
		}
		return fmt.Errorf("%s: %v: %s", strings.Join(cmd.Args, " "), err, s)
	}
	return nil
}

// asUser runs fn with the filesystem identity of id (nil: as we are): the
// goroutine is locked to its thread, which takes id's fsuid and fsgid and
// no supplementary groups, so that every file system call fn makes (and
// what FUSE tells the daemon) is id's, without its root capabilities over
// files. The thread gets root's identity back before it is unlocked.
func asUser(id *Identity, fn func() error) error {
	if id == nil {
		return fn()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	groups, err := unix.Getgroups()
	if err != nil {
		return fmt.Errorf("getgroups: %w", err)
	}
	// x/sys/unix makes these calls for this thread only (the syscall
	// package would make them for every thread).
	if err := unix.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	unix.Setfsgid(id.GID)
	unix.Setfsuid(id.UID)
	defer func() {
		unix.Setfsuid(0)
		unix.Setfsgid(0)
		unix.Setgroups(groups)
	}()
	if uid, _ := unix.SetfsuidRetUid(-1); uid != id.UID {
		return fmt.Errorf("setfsuid %d: still %d", id.UID, uid)
	}
	return fn()
}

// selector returns a filter for a list of names; an empty list takes all.
func selector(names []string) func(string) bool {
	if len(names) == 0 {
		return func(string) bool { return true }
	}
	set := map[string]bool{}
	for _, n := range names {
		set[n] = true
	}
	return func(n string) bool { return set[n] }
}

func unknownNames(asked, known []string) string {
	k := map[string]bool{}
	for _, n := range known {
		k[n] = true
	}
	var bad []string
	for _, n := range asked {
		if !k[n] {
			bad = append(bad, fmt.Sprintf("%q", n))
		}
	}
	return strings.Join(bad, ", ")
}

func caseNames(cs []*Case) []string {
	var names []string
	for _, c := range cs {
		names = append(names, c.Name)
	}
	return names
}
