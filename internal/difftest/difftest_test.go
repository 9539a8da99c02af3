package difftest

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// Flags of the long mode, e.g.
//
//	go test ./internal/difftest -run TestDiff -difftest.seeds 200 -difftest.steps 1000
//
// $DIFFTEST_SEEDS, $DIFFTEST_STEPS and $DIFFTEST_SEED set the defaults.
var (
	flagSeeds  = flag.Int("difftest.seeds", envInt("DIFFTEST_SEEDS", 20), "number of random scripts")
	flagSteps  = flag.Int("difftest.steps", envInt("DIFFTEST_STEPS", 150), "ops per script")
	flagSeed   = flag.Uint64("difftest.seed", uint64(envInt("DIFFTEST_SEED", 1)), "first seed; scripts use seed, seed+1, ...")
	flagShrink = flag.Int("difftest.shrink", 3, "shrink the first N failing scripts (0: none)")
	flagScript = flag.String("difftest.script", "", "run this script (JSON, as a report prints it) on the stack of -difftest.seed instead of random ones")
	flagKey    = flag.String("difftest.key", "", `shrink for this kind of mismatch (e.g. "op:link", "upper"), not the first one`)
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func TestMain(m *testing.M) {
	if os.Getenv(EnvRun) == "1" {
		os.Exit(RunnerMain())
	}
	flag.Parse()
	// Under -race, every race-enabled process (the runners, and the
	// daemons fstest builds with -race) sleeps a second at exit unless
	// told not to; this test starts hundreds of them. Races are still
	// reported when they happen, and fail the process's exit status.
	if g := os.Getenv("GORACE"); !strings.Contains(g, "atexit_sleep_ms") {
		os.Setenv("GORACE", strings.TrimSpace(g+" atexit_sleep_ms=0"))
	}
	code := m.Run()
	fstest.RemoveBinary()
	os.Exit(code)
}

// knownDifference is a difference between unionmount and kernel overlayfs
// that is deliberate, a limit of FUSE, or a kernel quirk that changes
// nothing a user of the mount sees; docs/semantics.md should list the same
// ones. Its hooks rewrite what was observed so that exactly that difference
// does not count. A bug never goes here: the test reports it.
type knownDifference struct {
	name   string
	reason string
	// kernelTree rewrites a merged tree the kernel showed.
	kernelTree func(fstest.Tree)
	// kernelResult rewrites the result of one op on the kernel.
	kernelResult func(Op, *Result)
	// results rewrites both sides' results of one op.
	results func(op Op, kernel, union *Result)
	// kernelUpper rewrites a snapshot of the kernel's upper directory.
	kernelUpper func(fstest.Tree)
	// uppers rewrites the snapshots of both upper directories after ops,
	// given the kernel's results.
	uppers func(ops []Op, kernel []Result, kt, ut fstest.Tree)
	// kernelOverUnion rewrites the tree kernel overlayfs shows over
	// unionmount's upper.
	kernelOverUnion func(fstest.Tree)
	// unionOverKernel rewrites the kernel's final tree before it is
	// compared with what unionmount shows over the kernel's upper.
	unionOverKernel func(fstest.Tree)
}

var knownDifferences = []knownDifference{
	{
		name: "whiteouts listed in unmerged directories",
		reason: "kernel overlayfs passes the listing of a directory that comes from a single layer " +
			"straight through, so a whiteout in it shows in readdir and then fails lstat with ENOENT; " +
			"unionmount never lists whiteouts",
		kernelTree: func(t fstest.Tree) {
			for p, e := range t {
				if e.Type == fstest.TypeVanished {
					delete(t, p)
				}
			}
		},
		kernelResult: func(op Op, r *Result) {
			if op.Kind != OpReaddir || r.Err != "" {
				return
			}
			var keep []string
			for _, f := range strings.Fields(r.Val) {
				if !strings.HasSuffix(f, VanishedMark) {
					keep = append(keep, f)
				}
			}
			r.Val = strings.Join(keep, " ")
		},
	},
	{
		name: "an open file keeps its inode number across the copy-up of a lower hard link",
		reason: "copying up one name of a lower hard link breaks the link and gives the copy a new " +
			"inode number (kernel overlayfs with index=off, and unionmount); the kernel reports the new " +
			"number at once, even through the descriptor whose open caused the copy-up. A FUSE inode's " +
			"number cannot change (go-fuse pins st_ino to the node's StableAttr), so on unionmount that " +
			"descriptor reports the old number and the next lookup gets a new node with the new one. " +
			"Only that descriptor's fstat is dropped; lookups before and after are still compared",
		results: func(op Op, k, u *Result) {
			if k.Pre == nil || u.Pre == nil || k.PreNlink < 2 || len(k.Inos) != 1 || len(u.Inos) != 1 {
				return
			}
			if k.Inos[0] != *k.Pre && u.Inos[0] == *u.Pre {
				k.Inos, u.Inos = nil, nil
			}
		},
	},
	{
		name: "an unlinked lower file keeps its link count on the kernel",
		reason: "a file opened from a lower layer and then unlinked is still linked in that layer, and " +
			"kernel overlayfs reports the lower file's link count through the descriptor; unionmount " +
			"reports 0, as a local filesystem does for any file whose last name is gone. Only when the " +
			"kernel's count did not drop (the file was a lower one) is its 0 expected",
		results: func(op Op, k, u *Result) {
			if op.Kind != OpUnlinkOpen || k.Err != "" || u.Err != "" || k.PreNlink == 0 {
				return
			}
			kept := fmt.Sprintf("nlink=%d ", k.PreNlink)
			if strings.HasPrefix(k.Val, kept) && strings.HasPrefix(u.Val, "nlink=0 ") {
				k.Val = "nlink=0 " + strings.TrimPrefix(k.Val, kept)
			}
		},
	},
	{
		name: "a failed rename leaves the kernel's opaque marker behind",
		reason: "kernel overlayfs marks a directory that only the upper has opaque when it moves it into " +
			"a merged directory (ovl_rename), and it does so before the rename itself, which can then " +
			"fail (ENOTEMPTY over a non-empty upper directory) and leave the marker; unionmount checks " +
			"first. The marker changes nothing in the merged view: nothing below shows through a " +
			"directory only the upper has",
		uppers: func(ops []Op, kernel []Result, kt, ut fstest.Tree) {
			// The directories a failed rename left in place, by inode
			// (the kernel reports an upper-only directory's own number),
			// wherever later renames took them.
			failed := map[uint64]bool{}
			for i, op := range ops {
				if op.Kind == OpRename && i < len(kernel) && kernel[i].Err != "" {
					for _, di := range kernel[i].Inos {
						failed[di.Ino] = true
					}
				}
			}
			for p, k := range kt {
				u := ut[p]
				if failed[k.Ino] && k.Type == fstest.TypeDir && u.Type == fstest.TypeDir &&
					k.Xattrs["trusted.overlay.opaque"] == "y" && u.Xattrs["trusted.overlay.opaque"] == "" {
					delete(k.Xattrs, "trusted.overlay.opaque")
				}
			}
		},
	},
	{
		name: "how a whiteout is made",
		reason: "kernel overlayfs (5.8+) makes whiteouts in its workdir, as the mounter, and hard-links " +
			"them to one shared whiteout, so its whiteouts have varying link counts, one inode and owner " +
			"0:0; unionmount makes each in place (RENAME_WHITEOUT or mknod), so a setgid directory gives " +
			"it its group. Both are char 0/0 devices, which is all the format says",
		uppers: func(_ []Op, _ []Result, k, u fstest.Tree) {
			for _, t := range []fstest.Tree{k, u} {
				for p, e := range t {
					if e.Type == fstest.TypeChar && e.Rdev == 0 {
						e.Nlink, e.InoClass, e.UID, e.GID = 1, p, 0, 0
						t[p] = e
					}
				}
			}
		},
	},
	{
		name: "unionmount's origin xattr shows through the kernel",
		reason: "unionmount keeps a copied-up entry's inode number in trusted.unionmount.origin " +
			"(user.unionmount.origin rootless); kernel overlayfs hides only its own trusted.overlay.* " +
			"names, so a kernel mount of unionmount's upper lists it",
		kernelOverUnion: func(t fstest.Tree) {
			for p, e := range t {
				for name := range e.Xattrs {
					if strings.HasPrefix(name, "trusted.unionmount.") || strings.HasPrefix(name, "user.unionmount.") {
						delete(e.Xattrs, name)
					}
				}
				if len(e.Xattrs) == 0 {
					e.Xattrs = nil
				}
				t[p] = e
			}
		},
	},
	{
		name: "user.overlay.* xattrs are escaped",
		reason: "unionmount reads user.overlay.opaque and user.overlay.whiteout as markers in every mount " +
			"(rootless layers carry them), so it stores a user's user.overlay.X as user.overlay.overlay.X " +
			"and hides an unescaped one; kernel overlayfs without userxattr escapes only trusted.overlay.* " +
			"and stores user.overlay.X as it is. The merged views agree; the uppers spell it differently",
		kernelUpper: func(t fstest.Tree) {
			renameXattrs(t, func(name string) string {
				if rest, ok := strings.CutPrefix(name, "user.overlay."); ok && !strings.HasPrefix(rest, "overlay.") {
					return "user.overlay.overlay." + rest
				}
				return name
			})
		},
		kernelOverUnion: func(t fstest.Tree) {
			renameXattrs(t, func(name string) string {
				if rest, ok := strings.CutPrefix(name, "user.overlay.overlay."); ok {
					return "user.overlay." + rest
				}
				return name
			})
		},
		unionOverKernel: func(t fstest.Tree) {
			renameXattrs(t, func(name string) string {
				if strings.HasPrefix(name, "user.overlay.") {
					return ""
				}
				return name
			})
		},
	},
}

// renameXattrs renames every xattr of t by f; "" drops it.
func renameXattrs(t fstest.Tree, f func(string) string) {
	for p, e := range t {
		if len(e.Xattrs) == 0 {
			continue
		}
		x := map[string]string{}
		for name, v := range e.Xattrs {
			if n := f(name); n != "" {
				x[n] = v
			}
		}
		if len(x) == 0 {
			x = nil
		}
		e.Xattrs = x
		t[p] = e
	}
}

func normalizeKernelTree(t fstest.Tree) {
	for _, k := range knownDifferences {
		if k.kernelTree != nil && t != nil {
			k.kernelTree(t)
		}
	}
}

func normalizeUppers(ops []Op, kernel []Result, kt, ut fstest.Tree) {
	for _, k := range knownDifferences {
		if k.kernelUpper != nil {
			k.kernelUpper(kt)
		}
		if k.uppers != nil {
			k.uppers(ops, kernel, kt, ut)
		}
	}
}

func normalizeKernelOverUnion(t fstest.Tree) {
	normalizeKernelTree(t)
	for _, k := range knownDifferences {
		if k.kernelOverUnion != nil {
			k.kernelOverUnion(t)
		}
	}
}

func normalizeUnionOverKernel(t fstest.Tree) fstest.Tree {
	c := fstest.Tree{}
	for p, e := range t {
		if e.Xattrs != nil {
			x := make(map[string]string, len(e.Xattrs))
			for k, v := range e.Xattrs {
				x[k] = v
			}
			e.Xattrs = x
		}
		c[p] = e
	}
	for _, k := range knownDifferences {
		if k.unionOverKernel != nil {
			k.unionOverKernel(c)
		}
	}
	return c
}

// normalizeRuns applies knownDifferences to the runs of ops on the kernel
// (k) and on unionmount (u).
func normalizeRuns(ops []Op, k, u *Run) {
	normalizeKernelTree(k.Before)
	normalizeKernelTree(k.After)
	for _, kd := range knownDifferences {
		for i := range ops {
			if i >= len(k.Results) || i >= len(u.Results) {
				break
			}
			if kd.kernelResult != nil {
				kd.kernelResult(ops[i], &k.Results[i])
			}
			if kd.results != nil {
				kd.results(ops[i], &k.Results[i], &u.Results[i])
			}
		}
	}
}

// upperXattrs is what the upper comparison sees of xattrs: the opaque
// marker and users' (escaped) xattrs, not the kernel's bookkeeping
// (trusted.overlay.origin, impure, ...) nor unionmount's.
func upperXattrs(name string) bool {
	switch {
	case name == "trusted.overlay.opaque", strings.HasPrefix(name, "trusted.overlay.overlay."):
		return true
	case strings.HasPrefix(name, "trusted.overlay."),
		strings.HasPrefix(name, "trusted.unionmount."), strings.HasPrefix(name, "user.unionmount."):
		return false
	}
	return name != "security.selinux"
}

// harness runs scripts on both sides in directories under root (a tmpfs:
// it never reuses inode numbers, so equal numbers mean one inode).
type harness struct {
	t    *testing.T
	root string
	exe  string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	fstest.RequireRoot(t)
	fstest.RequireOverlay(t)
	fstest.RequireFUSE(t)
	fstest.Binary(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("find the test binary: %v", err)
	}
	return &harness{t: t, root: mountTmpfs(t), exe: exe}
}

// mountTmpfs mounts a tmpfs for the test: unlike ext4 it never reuses an
// inode number, so equal numbers in a run mean one inode.
func mountTmpfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, "size=2g,mode=0755"); err != nil {
		testenv.Skipf(t, "needs a tmpfs for the layers: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(root, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount tmpfs %s: %v", root, err)
		}
	})
	return root
}

// scope collects the cleanups of the mounts of one execute, so that they
// run when it returns rather than when the test ends (the shrinker mounts
// hundreds of times), and keeps fstest from logging each daemon's (empty)
// output when the test fails: execute reports what matters itself.
type scope struct {
	testing.TB
	cleanups []func()
}

func (s *scope) Cleanup(f func()) { s.cleanups = append(s.cleanups, f) }
func (s *scope) Failed() bool     { return false }

func (s *scope) close() {
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		s.cleanups[i]()
	}
	s.cleanups = nil
}

// stages says how far execute goes after comparing the runs.
type stages struct {
	upper bool // compare the upper directories
	cross bool // cross-mount the uppers
}

var allStages = stages{upper: true, cross: true}

// outcome is one script run on both sides.
type outcome struct {
	ops        []Op
	kernel     *Run // normalised for knownDifferences
	union      *Run
	mismatches []Mismatch
}

// execute builds the stack of seed twice, runs ops on kernel overlayfs and
// on unionmount and compares everything st asks for.
func (h *harness) execute(seed uint64, ops []Op, st stages) *outcome {
	t := h.t
	t.Helper()
	dir, err := os.MkdirTemp(h.root, fmt.Sprintf("seed%d-", seed))
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sc := &scope{TB: t}
	defer sc.close()
	stack := GenStack(seed)
	type side struct {
		dir, upper, work, mnt string
		lowers                []string
	}
	build := func(name string) side {
		s := side{dir: filepath.Join(dir, name)}
		if err := os.Mkdir(s.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if s.lowers, s.upper, s.work, err = stack.Build(s.dir); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		s.mnt = filepath.Join(s.dir, "mnt")
		if err := os.Mkdir(s.mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		return s
	}
	ks, us := build("kernel"), build("union")

	km := fstest.MountKernelOverlay(sc, ks.lowers, ks.upper, ks.work, ks.mnt)
	um := fstest.MountUnion(sc, us.lowers, us.upper, us.work, us.mnt)
	job := Job{Ops: ops, Before: seed%2 == 1}
	var kr, ur *Run
	var kerr, uerr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); kr, kerr = h.runner(ks.dir, ks.mnt, job) }()
	go func() { defer wg.Done(); ur, uerr = h.runner(us.dir, us.mnt, job) }()
	wg.Wait()
	if err := errors.Join(kerr, km.Unmount()); err != nil {
		t.Fatalf("seed %d: kernel overlayfs: %v", seed, err)
	}
	if err := errors.Join(uerr, um.Unmount()); err != nil {
		// A hang, a crash or an unclean exit: a finding like any other.
		return &outcome{ops: ops, kernel: kr, mismatches: []Mismatch{{Check: CheckRunner, Op: -1,
			Text: fmt.Sprintf("%v\ndaemon output:\n%s", err, um.Output())}}}
	}
	normalizeRuns(ops, kr, ur)
	o := &outcome{ops: ops, kernel: kr, union: ur}
	o.mismatches = CompareRuns(ops, kr, ur)

	mt := TrackMtimes(ops, kr.Results)
	if st.upper {
		kt, err := fstest.Snapshot(ks.upper, fstest.XattrFilter(upperXattrs))
		if err != nil {
			t.Fatalf("seed %d: kernel upper: %v", seed, err)
		}
		ut, err := fstest.Snapshot(us.upper, fstest.XattrFilter(upperXattrs))
		if err != nil {
			t.Fatalf("seed %d: unionmount upper: %v", seed, err)
		}
		normalizeUppers(ops, kr.Results, kt, ut)
		diffs := fstest.Diff(kt, ut, fstest.IgnoreFields(fstest.FieldMtime), fstest.CompareFields(fstest.FieldDirNlink))
		diffs = append(diffs, DiffMtimes(kt, ut, mt.Known)...)
		for _, d := range diffs {
			o.mismatches = append(o.mismatches, Mismatch{Check: CheckUpper, Op: -1, Text: d + " (kernel != unionmount)"})
		}
	}
	if st.cross {
		// Kernel overlayfs over unionmount's upper, unionmount over the
		// kernel's: each must show what the other side showed.
		views, err := h.views(sc, seed, []view{
			{kernel: true, lowers: us.lowers, upper: us.upper, dir: us.dir, name: "kernel overlayfs over unionmount's upper"},
			{kernel: false, lowers: ks.lowers, upper: ks.upper, dir: ks.dir, name: "unionmount over the kernel's upper"},
		})
		if err != nil {
			o.mismatches = append(o.mismatches, Mismatch{Check: CheckCrossUnion, Op: -1, Text: err.Error()})
			return o
		}
		normalizeKernelOverUnion(views[0])
		for _, d := range fstest.Diff(ur.After, views[0]) {
			o.mismatches = append(o.mismatches, Mismatch{Check: CheckCrossKernel, Op: -1,
				Text: d + " (unionmount's view != kernel overlayfs over unionmount's upper)"})
		}
		for _, d := range fstest.Diff(normalizeUnionOverKernel(kr.After), views[1]) {
			o.mismatches = append(o.mismatches, Mismatch{Check: CheckCrossUnion, Op: -1,
				Text: d + " (kernel's view != unionmount over the kernel's upper)"})
		}

		// Each side again over its own upper: the same tree, and inode
		// numbers that survive the remount exactly when the kernel's do.
		views, err = h.views(sc, seed, []view{
			{kernel: true, lowers: ks.lowers, upper: ks.upper, dir: ks.dir, name: "kernel overlayfs remounted"},
			{kernel: false, lowers: us.lowers, upper: us.upper, dir: us.dir, name: "unionmount remounted"},
		})
		if err != nil {
			o.mismatches = append(o.mismatches, Mismatch{Check: CheckRemount, Op: -1, Text: err.Error()})
			return o
		}
		normalizeKernelTree(views[0])
		for _, d := range fstest.Diff(kr.After, views[0]) {
			o.mismatches = append(o.mismatches, Mismatch{Check: CheckRemount, Op: -1,
				Text: d + " (kernel overlayfs before != after a remount; the oracle itself changed)"})
		}
		for _, d := range fstest.Diff(ur.After, views[1]) {
			o.mismatches = append(o.mismatches, Mismatch{Check: CheckRemount, Op: -1,
				Text: d + " (unionmount before != after a remount)"})
		}
		for _, p := range kr.After.Paths() {
			k0, k1, kok := kr.After[p], views[0][p], true
			u0, u1, uok := ur.After[p], views[1][p], true
			_, kok = views[0][p]
			if _, ok := ur.After[p]; !ok {
				uok = false
			}
			if _, ok := views[1][p]; !ok {
				uok = false
			}
			if !kok || !uok || k0.Type == fstest.TypeVanished {
				continue
			}
			if ks, us := k0.Ino == k1.Ino, u0.Ino == u1.Ino; ks != us {
				o.mismatches = append(o.mismatches, Mismatch{Check: CheckRemount, Op: -1,
					Text: fmt.Sprintf("%s: inode number kept across a remount: kernel %v, unionmount %v", p, ks, us)})
			}
		}
	}
	return o
}

// view is a read-only look at a stack's upper after the script: a mount
// of kind kernel (else unionmount) over lowers and upper, with a fresh
// workdir and mount point in dir.
type view struct {
	kernel     bool
	lowers     []string
	upper, dir string
	name       string
}

// views mounts each view, snapshots them all in runner processes and
// unmounts them; it returns the (unnormalised) trees in order. A kernel
// view that fails stops the test; a unionmount one is returned as error.
func (h *harness) views(sc *scope, seed uint64, vs []view) ([]fstest.Tree, error) {
	t := h.t
	t.Helper()
	type mounted struct {
		mnt     string
		unmount func() error
		output  func() string
	}
	ms := make([]mounted, len(vs))
	for i, v := range vs {
		work, err := os.MkdirTemp(v.dir, "work-")
		if err != nil {
			t.Fatal(err)
		}
		mnt, err := os.MkdirTemp(v.dir, "mnt-")
		if err != nil {
			t.Fatal(err)
		}
		if v.kernel {
			k := fstest.MountKernelOverlay(sc, v.lowers, v.upper, work, mnt)
			ms[i] = mounted{mnt: mnt, unmount: k.Unmount, output: func() string { return "" }}
		} else {
			u := fstest.MountUnion(sc, v.lowers, v.upper, work, mnt)
			ms[i] = mounted{mnt: mnt, unmount: u.Unmount, output: u.Output}
		}
	}
	runs := make([]*Run, len(vs))
	errs := make([]error, len(vs))
	var wg sync.WaitGroup
	for i, v := range vs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runs[i], errs[i] = h.runner(v.dir, ms[i].mnt, Job{})
		}()
	}
	wg.Wait()
	var uerrs []error
	trees := make([]fstest.Tree, len(vs))
	for i, v := range vs {
		err := errors.Join(errs[i], ms[i].unmount())
		switch {
		case err != nil && v.kernel:
			t.Fatalf("seed %d: %s: %v", seed, v.name, err)
		case err != nil:
			uerrs = append(uerrs, fmt.Errorf("%s: %w\ndaemon output:\n%s", v.name, err, ms[i].output()))
		default:
			trees[i] = runs[i].After
		}
	}
	return trees, errors.Join(uerrs...)
}

// runner runs job on the mount mnt in a child process (the test binary in
// runner mode) and returns what it observed. Job and result files go to
// dir, outside the mount.
func (h *harness) runner(dir, mnt string, job Job) (*Run, error) {
	job.Root = mnt
	b, err := json.Marshal(&job)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, "job-*.json")
	if err != nil {
		return nil, err
	}
	jobPath, outPath := f.Name(), f.Name()+".out"
	defer os.Remove(jobPath)
	defer os.Remove(outPath)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute+time.Duration(len(job.Ops))*50*time.Millisecond)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.exe)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), EnvRun+"=1", EnvJob+"="+jobPath, EnvOut+"="+outPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (timed out: the mount may hang)", err)
		}
		return nil, fmt.Errorf("runner on %s: %w\n%s", mnt, err, out)
	}
	b, err = os.ReadFile(outPath)
	if err != nil {
		return nil, fmt.Errorf("runner on %s: %w", mnt, err)
	}
	var run Run
	if err := json.Unmarshal(b, &run); err != nil {
		return nil, fmt.Errorf("runner on %s: decode result: %w", mnt, err)
	}
	return &run, nil
}

// TestDiff runs random scripts on kernel overlayfs and unionmount and
// compares everything; a failing script is shrunk and printed.
func TestDiff(t *testing.T) {
	h := newHarness(t)
	seeds, steps, first := *flagSeeds, *flagSteps, *flagSeed
	var mu sync.Mutex // guards the counters below
	shrinks := *flagShrink
	total, failed := 0, 0
	start := time.Now()
	// Seeds run in parallel (-test.parallel, GOMAXPROCS by default): a
	// script spends most of its time waiting for mounts, processes and
	// FUSE round trips.
	t.Run("seeds", func(t *testing.T) {
		for s := first; s < first+uint64(seeds); s++ {
			t.Run(fmt.Sprintf("seed=%d", s), func(t *testing.T) {
				t.Parallel()
				h := &harness{t: t, root: h.root, exe: h.exe}
				ops := GenScript(s, steps)
				if *flagScript != "" {
					ops = nil
					if err := json.Unmarshal([]byte(*flagScript), &ops); err != nil {
						t.Fatalf("-difftest.script: %v", err)
					}
				}
				o := h.execute(s, ops, allStages)
				mu.Lock()
				total += len(ops)
				shrink := len(o.mismatches) > 0 && shrinks > 0
				if len(o.mismatches) > 0 {
					failed++
				}
				if shrink {
					shrinks--
				}
				mu.Unlock()
				if len(o.mismatches) == 0 {
					return
				}
				t.Errorf("seed %d: %d differences between kernel overlayfs and unionmount:\n%s",
					s, len(o.mismatches), listMismatches(o.mismatches, 15))
				if shrink {
					h.shrinkAndReport(s, o)
				}
			})
		}
	})
	t.Logf("differential test: %d random steps run on each of kernel overlayfs and unionmount "+
		"(%d seeds from %d x %d steps) in %v; %d seeds differ",
		total, seeds, first, steps, time.Since(start).Round(time.Millisecond), failed)
}

func listMismatches(ms []Mismatch, limit int) string {
	var b strings.Builder
	for i, m := range ms {
		if i == limit {
			fmt.Fprintf(&b, "  ... and %d more\n", len(ms)-limit)
			break
		}
		b.WriteString("  " + m.String() + "\n")
	}
	return b.String()
}

// shrinkAndReport shrinks the script of a failing outcome to a minimal one
// that fails the same way (the first mismatch's key) and logs it.
func (h *harness) shrinkAndReport(seed uint64, o *outcome) {
	t := h.t
	first := o.mismatches[0]
	for _, m := range o.mismatches {
		if m.Key() == *flagKey {
			first = m
			break
		}
	}
	key := first.Key()
	st := stages{}
	switch first.Check {
	case CheckUpper:
		st.upper = true
	case CheckCrossKernel, CheckCrossUnion, CheckRemount:
		st = allStages
	}
	has := func(ms []Mismatch) bool {
		for _, m := range ms {
			if m.Key() == key {
				return true
			}
		}
		return false
	}
	ops := o.ops
	// An op mismatch cannot depend on later ops.
	if first.Op >= 0 {
		ops = ops[:first.Op+1]
	}
	deadline := time.Now().Add(2 * time.Minute)
	var last *outcome
	fails := func(cand []Op) bool {
		if time.Now().After(deadline) {
			return false
		}
		r := h.execute(seed, cand, st)
		if has(r.mismatches) {
			last = r
			return true
		}
		return false
	}
	if !fails(ops) {
		ops = o.ops
		last = o
	}
	min, runs := Shrink(ops, fails, 400)
	if last == nil || len(last.ops) != len(min) {
		last = h.execute(seed, min, st)
	}
	t.Errorf("seed %d: shrunk to %d ops in %d runs (failing the same way: %s)\n%s",
		seed, len(min), runs, key, report(seed, last))
}

// report prints the stack, the script with both sides' results and the
// differences.
func report(seed uint64, o *outcome) string {
	var b strings.Builder
	fmt.Fprintf(&b, "stack of seed %d:\n%s", seed, GenStack(seed))
	b.WriteString("script (result on the kernel | on unionmount):\n")
	for i, op := range o.ops {
		if o.union == nil || i >= len(o.kernel.Results) || i >= len(o.union.Results) {
			fmt.Fprintf(&b, "  %3d %s\n", i, op)
			continue
		}
		kr, ur := o.kernel.Results[i], o.union.Results[i]
		mark := " "
		if kr.Err != ur.Err || kr.Val != ur.Val {
			mark = "*"
		}
		fmt.Fprintf(&b, " %s%3d %s\n        kernel:     %s\n        unionmount: %s\n", mark, i, op, kr, ur)
	}
	b.WriteString("differences:\n" + listMismatches(o.mismatches, 30))
	js, _ := json.Marshal(o.ops)
	fmt.Fprintf(&b, "rerun this script: go test ./internal/difftest -run 'TestDiff/seeds/seed=%d$' -difftest.seed %d -difftest.seeds 1 -difftest.script '%s'\n",
		seed, seed, js)
	fmt.Fprintf(&b, "rerun the whole seed: go test ./internal/difftest -run 'TestDiff/seeds/seed=%d$' -difftest.seed %d -difftest.seeds 1 -difftest.steps %d\n",
		seed, seed, *flagSteps)
	return b.String()
}
