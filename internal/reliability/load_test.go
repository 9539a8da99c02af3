package reliability

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/fstest"
	"golang.org/x/sys/unix"
)

// The load's name space: a few merged directories, each with lower files,
// names that start absent, subdirectories that come and go, and a lower
// subdirectory that can neither be renamed (EXDEV) nor removed while full.
const (
	loadDirs  = 4
	loadFiles = 8 // dN/fM, in the lower
	loadNew   = 4 // dN/nM, absent at first
	loadSubs  = 2 // dN/sM, directories made and removed
)

func loadFixture() []fstest.Applier {
	var fx []fstest.Applier
	for d := 0; d < loadDirs; d++ {
		dir := fmt.Sprintf("d%d", d)
		fx = append(fx, fstest.CreateDir(dir, 0o755), fstest.CreateDir(dir+"/ld", 0o755),
			fstest.CreateFile(dir+"/ld/x", []byte("keeps ld full\n"), 0o644))
		for f := 0; f < loadFiles; f++ {
			fx = append(fx, fstest.CreateFile(fmt.Sprintf("%s/f%d", dir, f), []byte(strings.Repeat(fmt.Sprintf("%s/f%d\n", dir, f), 1000)), 0o644))
		}
	}
	return fx
}

// loadJob is one load worker's job.
type loadJob struct {
	Mnt    string
	Seed   uint64
	Millis int
}

// loadResult is what a load worker did and saw.
type loadResult struct {
	Ops        map[string]int
	Errnos     map[string]int // "op ERRNO", for the errnos concurrency explains
	Unexpected []string       // the first of the others, with the call
	Known      map[string]int // "op ERRNO" of known bugs (knownBugErrno)
	Bytes      int64
}

// expectedErrno lists what concurrent changes to one name space explain.
var expectedErrno = map[string]bool{
	"ENOENT": true, "EEXIST": true, "ENOTEMPTY": true, "EXDEV": true,
	"EISDIR": true, "ENOTDIR": true, "ENODATA": true, "ELOOP": true,
}

// knownBugErrno are symptoms of known bugs: counted and logged, not
// failed. Remove an entry with its fix, and run TestLoad a few times.
var knownBugErrno = map[string]string{}

func loadWorker() error {
	var job loadJob
	if err := json.NewDecoder(os.Stdin).Decode(&job); err != nil {
		return fmt.Errorf("decode job: %w", err)
	}
	w := &loader{mnt: job.Mnt, rng: rand.New(rand.NewPCG(job.Seed, 30)),
		res: loadResult{Ops: map[string]int{}, Errnos: map[string]int{}, Known: map[string]int{}}}
	deadline := time.Now().Add(time.Duration(job.Millis) * time.Millisecond)
	for time.Now().Before(deadline) {
		w.step()
	}
	return json.NewEncoder(os.Stdout).Encode(w.res)
}

type loader struct {
	mnt string
	rng *rand.Rand
	res loadResult
	buf [64 << 10]byte
}

func (w *loader) dir() string { return fmt.Sprintf("d%d", w.rng.IntN(loadDirs)) }

// file is a regular-file name, lower or new.
func (w *loader) file() string {
	if w.rng.IntN(3) == 0 {
		return fmt.Sprintf("%s/n%d", w.dir(), w.rng.IntN(loadNew))
	}
	return fmt.Sprintf("%s/f%d", w.dir(), w.rng.IntN(loadFiles))
}

func (w *loader) sub() string { return fmt.Sprintf("%s/s%d", w.dir(), w.rng.IntN(loadSubs)) }

func (w *loader) p(rel string) string { return filepath.Join(w.mnt, rel) }

func (w *loader) done(op string, err error, what string) {
	w.res.Ops[op]++
	if err == nil {
		return
	}
	name := errnoName(err)
	if expectedErrno[name] {
		w.res.Errnos[op+" "+name]++
		return
	}
	if knownBugErrno[name] != "" || knownBugErrno[op+" "+name] != "" {
		w.res.Known[op+" "+name]++
		return
	}
	if len(w.res.Unexpected) < 20 {
		w.res.Unexpected = append(w.res.Unexpected, fmt.Sprintf("%s %s: %v", op, what, err))
	}
}

func (w *loader) step() {
	switch n := w.rng.IntN(100); {
	case n < 18:
		f := w.file()
		b, err := os.ReadFile(w.p(f))
		w.res.Bytes += int64(len(b))
		w.done("read", err, f)
	case n < 28:
		f := w.file()
		err := w.writeAt(f, unix.O_WRONLY|unix.O_CREAT, false)
		w.done("write", err, f)
	case n < 33:
		f := w.file()
		err := w.writeAt(f, unix.O_WRONLY|unix.O_APPEND, false)
		w.done("append", err, f)
	case n < 35:
		f := w.file()
		err := w.writeAt(f, unix.O_WRONLY, true)
		w.done("fsync", err, f)
	case n < 38:
		f := w.file()
		w.done("truncate", unix.Truncate(w.p(f), w.rng.Int64N(16<<10)), f)
	case n < 46:
		a, b := w.file(), w.file()
		flags := uint(0)
		switch w.rng.IntN(6) {
		case 0:
			flags = unix.RENAME_NOREPLACE
		case 1:
			flags = unix.RENAME_EXCHANGE
		}
		w.done("rename", unix.Renameat2(unix.AT_FDCWD, w.p(a), unix.AT_FDCWD, w.p(b), flags), a+" "+b)
	case n < 49:
		f := w.file()
		w.done("unlink", unix.Unlink(w.p(f)), f)
	case n < 52:
		f := w.file()
		fd, err := unix.Open(w.p(f), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
		if err == nil {
			unix.Close(fd)
		}
		w.done("create", err, f)
	case n < 54:
		a, b := w.file(), w.file()
		w.done("link", unix.Link(w.p(a), w.p(b)), a+" "+b)
	case n < 55:
		a, b := w.file(), w.file()
		w.done("symlink", unix.Symlink("../"+a, w.p(b)), b)
	case n < 58:
		s := w.sub()
		w.done("mkdir", unix.Mkdir(w.p(s), 0o755), s)
	case n < 61:
		s := w.sub()
		if w.rng.IntN(4) == 0 {
			s = w.dir() + "/ld"
		}
		w.done("rmdir", unix.Rmdir(w.p(s)), s)
	case n < 63:
		a, b := w.sub(), w.sub()
		if w.rng.IntN(3) == 0 {
			a = w.dir() + "/ld"
		}
		w.done("rename-dir", unix.Rename(w.p(a), w.p(b)), a+" "+b)
	case n < 64:
		s := w.sub()
		err := os.WriteFile(w.p(s+"/in"), []byte("in a new dir\n"), 0o644)
		w.done("create-in-sub", err, s)
	case n < 74:
		d := w.dir()
		if w.rng.IntN(4) == 0 {
			d = "."
		}
		_, err := os.ReadDir(w.p(d))
		w.done("readdir", err, d)
	case n < 88:
		f := w.file()
		var st unix.Stat_t
		w.done("stat", unix.Lstat(w.p(f), &st), f)
	case n < 91:
		f := w.file()
		w.done("setxattr", unix.Setxattr(w.p(f), "user.load", []byte(f), 0), f)
	case n < 94:
		f := w.file()
		_, err := unix.Getxattr(w.p(f), "user.load", w.buf[:256])
		w.done("getxattr", err, f)
	case n < 96:
		f := w.file()
		w.done("chmod", unix.Chmod(w.p(f), 0o600|uint32(w.rng.IntN(2))*0o044), f)
	case n < 97:
		err := filepath.WalkDir(w.mnt, func(p string, d fs.DirEntry, err error) error {
			if err != nil && os.IsNotExist(err) {
				return nil // gone while walking
			}
			return err
		})
		w.done("walk", err, "")
	default:
		// Open a file and read it after a rename of it: handles follow.
		f, g := w.file(), w.file()
		fd, err := unix.Open(w.p(f), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Rename(w.p(f), w.p(g))
			_, err = unix.Pread(fd, w.buf[:4096], 0)
			unix.Close(fd)
		}
		w.done("read-renamed", err, f)
	}
}

func (w *loader) writeAt(rel string, flags int, sync bool) error {
	fd, err := unix.Open(w.p(rel), flags|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	n := 1 + w.rng.IntN(16<<10)
	b := w.buf[:n]
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	if flags&unix.O_APPEND != 0 {
		_, err = unix.Write(fd, b)
	} else {
		_, err = unix.Pwrite(fd, b, w.rng.Int64N(128<<10))
	}
	if err == nil && sync {
		err = unix.Fsync(fd)
	}
	w.res.Bytes += int64(n)
	return err
}

// TestLoad runs 16 worker processes (-reliability.workers) doing mixed
// reads, writes, renames, copy-ups, links, xattrs, directory changes and
// listings on one small, overlapping name space, against a daemon built
// with -race, with and without passthrough. It fails on a worker that does
// not finish in time (a deadlock), on an errno that concurrency does not
// explain, on a data race or panic in the daemon's output, on descriptors
// the daemon keeps after the load, on leftovers in the workdir, and when
// kernel overlayfs, mounted over the same layers afterwards, shows another
// tree than unionmount does.
func TestLoad(t *testing.T) {
	fstest.RequireFUSE(t)
	fstest.RequireOverlay(t)
	bin := daemonBinary(t, true)
	per := loadDuration() / 2
	for i, tg := range unionTargets {
		t.Run(tg.name, func(t *testing.T) {
			// On a tmpfs: copy-ups fsync, and on this disk that, not the
			// daemon, would bound the rate of operations.
			base := publicTempDir(t)
			mountTmpfs(t, base, "size=512m")
			l := newLayers(t, base)
			if err := fstest.Apply(l.lower, loadFixture()...); err != nil {
				t.Fatal(err)
			}
			// Few directory descriptors: the load also drops and reopens
			// them through their parents while renames move them.
			u := l.mountBinary(t, bin, append([]string{"--max-dir-fds", strconv.Itoa(loadMaxDirFds)}, tg.args...)...)
			if _, err := os.ReadDir(l.mnt); err != nil {
				t.Fatal(err)
			}
			before, err := readProcStats(u.Pid)
			if err != nil {
				t.Fatal(err)
			}
			baseline, err := daemonGoroutines(u)
			if err != nil {
				t.Fatal(err)
			}

			type running struct {
				cmd *exec.Cmd
				out strings.Builder
				err strings.Builder
			}
			var ws []*running
			start := time.Now()
			for w := 0; w < *workersFlag; w++ {
				r := &running{}
				r.cmd = workerCmd(t, "load", loadJob{Mnt: l.mnt, Seed: *seedFlag*1000 + uint64(i*100+w), Millis: int(per.Milliseconds())}, nil)
				r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.err
				if err := r.cmd.Start(); err != nil {
					t.Fatal(err)
				}
				ws = append(ws, r)
			}
			var peak procStats
			exited := make(chan int, len(ws))
			for i, r := range ws {
				go func() { r.cmd.Wait(); exited <- i }()
			}
			deadline := time.After(per + 60*time.Second)
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for left := len(ws); left > 0; {
				select {
				case <-exited:
					left--
				case <-tick.C:
					if s, err := readProcStats(u.Pid); err == nil && s.FDs > peak.FDs {
						peak = s
					}
				case <-deadline:
					u.Cmd.Process.Signal(unix.SIGQUIT)
					for _, r := range ws {
						r.cmd.Process.Kill()
					}
					t.Fatalf("%d of %d workers still running %v after their %v: deadlock (daemon stacks in its output)",
						left, len(ws), time.Since(start)-per, per)
				}
			}
			elapsed := time.Since(start)

			total := loadResult{Ops: map[string]int{}, Errnos: map[string]int{}, Known: map[string]int{}}
			for w, r := range ws {
				if !r.cmd.ProcessState.Success() {
					t.Errorf("worker %d: %v\n%s", w, r.cmd.ProcessState, r.err.String())
					continue
				}
				var res loadResult
				if err := json.Unmarshal([]byte(r.out.String()), &res); err != nil {
					t.Fatalf("worker %d: %v", w, err)
				}
				for k, v := range res.Ops {
					total.Ops[k] += v
				}
				for k, v := range res.Errnos {
					total.Errnos[k] += v
				}
				for k, v := range res.Known {
					total.Known[k] += v
				}
				total.Unexpected = append(total.Unexpected, res.Unexpected...)
				total.Bytes += res.Bytes
			}
			ops := 0
			for _, v := range total.Ops {
				ops += v
			}
			t.Logf("%s: %d workers, %d ops in %v (%.0f ops/s), %d MiB moved; ops %v", tg.name, len(ws), ops,
				elapsed.Round(time.Millisecond), float64(ops)/elapsed.Seconds(), total.Bytes>>20, sortedCounts(total.Ops))
			t.Logf("%s: errnos concurrency explains: %v", tg.name, sortedCounts(total.Errnos))
			if len(total.Known) > 0 {
				t.Logf("%s: symptoms of known bugs (see knownBugErrno): %v", tg.name, sortedCounts(total.Known))
			}
			for _, u := range total.Unexpected {
				t.Errorf("unexpected: %s", u)
			}
			if ops < 20*len(ws) {
				t.Errorf("only %d ops from %d workers", ops, len(ws))
			}

			var after procStats
			if !waitFor(10*time.Second, func() bool {
				after, _ = readProcStats(u.Pid)
				return layerFDs(after, l.root) <= layerFDs(before, l.root) && after.PathFDs <= before.PathFDs+loadMaxDirFds
			}) {
				t.Errorf("daemon descriptors 10s after the load (at most %d more O_PATH): %v; before: %v\nfiles before: %q\nfiles after: %q", loadMaxDirFds,
					after, before, before.Paths, after.Paths)
			}
			// Every goroutine a request starts must end with it. The one
			// pool that stays is go-fuse's readers (fuse/fusefd.go
			// readRequest): a reader that finds none idle starts another,
			// and an idle one exits only while more than maxReaders (its
			// GOMAXPROCS at mount, 2 to 16) are reading, so up to
			// maxReaders+1 wait in read(2) after a load, where a fresh
			// mount has one or two. A leak grows with the operations
			// (thousands here), not by that constant.
			readers := min(max(runtime.GOMAXPROCS(0), 2), 16)
			goroutines := -1
			if !waitFor(10*time.Second, func() bool {
				goroutines, err = daemonGoroutines(u)
				return err == nil && goroutines <= baseline+readers
			}) {
				t.Errorf("daemon goroutines 10s after the load: %d (%v); before: %d, and go-fuse may keep %d more readers: a goroutine leak",
					goroutines, err, baseline, readers)
			}
			t.Logf("%s: daemon goroutines before %d, after %d", tg.name, baseline, goroutines)
			t.Logf("%s: daemon before %v; at peak %v; after %v", tg.name, before, peak, after)
			if after.Pipes > 2*64+before.Pipes {
				t.Errorf("daemon keeps %d pipes after the load", after.Pipes)
			}
			// A race-enabled daemon over a name space of some 60 entries.
			if after.HWM > 512<<20 {
				t.Errorf("daemon peak RSS %d MiB, more than 512 MiB", after.HWM>>20)
			}
			if err := u.Unmount(); err != nil {
				t.Error(err)
			}
			out := u.Output()
			for _, bad := range []string{"DATA RACE", "panic:", "fatal error:"} {
				if i := strings.Index(out, bad); i >= 0 {
					t.Errorf("daemon output has %q:\n%s", bad, out[max(0, i-200):min(len(out), i+4000)])
				}
			}
			if left := l.workLeftovers(t); len(left) > 0 {
				t.Errorf("workdir holds %d entries after the load, first %q", len(left), left[0])
			}

			// The layers left behind read the same through the kernel.
			u2 := l.mountBinary(t, bin, tg.args...)
			ut, err := fstest.Snapshot(l.mnt, fstest.XattrFilter(noUnionmountXattrs))
			if err != nil {
				t.Fatal(err)
			}
			if err := u2.Unmount(); err != nil {
				t.Fatal(err)
			}
			k := l.mountKernel(t)
			kt, err := fstest.Snapshot(l.mnt, fstest.XattrFilter(noUnionmountXattrs))
			if err != nil {
				t.Fatal(err)
			}
			if err := k.Unmount(); err != nil {
				t.Fatal(err)
			}
			for _, d := range fstest.Diff(kt, ut) {
				t.Errorf("after the load, unionmount differs from the kernel over the same layers: %s", d)
			}
			t.Logf("%s: the merged tree after the load has %d entries, the same through the kernel", tg.name, len(ut))
		})
	}
}

// layerFDs counts the descriptors of files under root.
func layerFDs(s procStats, root string) int {
	n := 0
	for _, p := range s.Paths {
		if strings.HasPrefix(p, root+"/") {
			n++
		}
	}
	return n
}

// noUnionmountXattrs hides unionmount's bookkeeping, which the kernel
// shows as ordinary xattrs.
func noUnionmountXattrs(name string) bool {
	return fstest.DefaultXattrFilter(name) && !strings.HasPrefix(name, "trusted.unionmount.")
}

func sortedCounts(m map[string]int) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var out []string
	for _, k := range ks {
		out = append(out, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(out, " ")
}

// loadMaxDirFds is TestLoad's bound on directory descriptors, below the
// number of directories its workers make.
const loadMaxDirFds = 8

// walkMaxDirFds is TestMemoryWalk's bound on directory descriptors,
// below the number of directories it walks.
const walkMaxDirFds = 16

// TestMemoryWalk builds a lower of 50,000 entries (-reliability.walk; a
// million in the long mode), in directories of 1,000, walks the mount with
// lstat on every entry, then walks the first fifth of it again, and
// measures the daemon (built without -race): the memory it holds per entry
// the kernel keeps looked up, and that walking entries again does not grow
// it.
func TestMemoryWalk(t *testing.T) {
	fstest.RequireFUSE(t)
	n := walkEntries()
	const perDir = 1000
	l := newLayers(t, "")
	start := time.Now()
	for d := 0; d*perDir < n; d++ {
		dir := filepath.Join(l.lower, fmt.Sprintf("d%04d", d))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := 0; f < perDir && d*perDir+f < n; f++ {
			fd, err := unix.Open(filepath.Join(dir, fmt.Sprintf("f%04d", f)), unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(fd)
		}
	}
	t.Logf("made %d lower entries in %v", n, time.Since(start).Round(time.Millisecond))
	u := l.mountBinary(t, plainDaemonBinary(t), "--max-dir-fds", strconv.Itoa(walkMaxDirFds))
	before, err := readProcStats(u.Pid)
	if err != nil {
		t.Fatal(err)
	}
	dirs := (n + perDir - 1) / perDir
	walk := func(maxDir int) (int, time.Duration) {
		start := time.Now()
		seen := 0
		err := filepath.WalkDir(l.mnt, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && p != l.mnt {
				var i int
				if _, err := fmt.Sscanf(filepath.Base(p), "d%04d", &i); err == nil && i >= maxDir {
					return filepath.SkipDir
				}
			}
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return err
			}
			if !d.IsDir() {
				seen++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return seen, time.Since(start)
	}
	seen1, took1 := walk(dirs)
	after1, _ := readProcStats(u.Pid)
	again := max(1, dirs/5)
	seen2, took2 := walk(again)
	after2, _ := readProcStats(u.Pid)
	if want2 := min(n, again*perDir); seen1 != n || seen2 != want2 {
		t.Errorf("walks saw %d and %d files, want %d and %d", seen1, seen2, n, want2)
	}
	perEntry := float64(after1.HWM-before.RSS) / float64(n)
	t.Logf("daemon idle %v", before)
	t.Logf("walk 1: %d entries in %v, daemon %v", seen1, took1.Round(time.Millisecond), after1)
	t.Logf("walk 2: %d entries in %v, daemon %v", seen2, took2.Round(time.Millisecond), after2)
	t.Logf("peak RSS growth per entry: %.0f bytes (bound checked: 4096)", perEntry)
	if perEntry > 4096 {
		t.Errorf("the daemon's peak RSS grew %.0f bytes per entry walked, more than 4 KiB", perEntry)
	}
	if grow := after2.HWM - after1.HWM; grow > after1.HWM/4+16<<20 {
		t.Errorf("a second walk over the same entries raised the peak RSS by %d MiB (from %d MiB)", grow>>20, after1.HWM>>20)
	}
	if after2.FDs-after2.PathFDs > before.FDs-before.PathFDs+8 {
		t.Errorf("descriptors after two walks: %v, before: %v", after2, before)
	}
	// The directory descriptors held for nodes stay within the bound
	// however many directories the walk met (more than it, here).
	if after1.PathFDs > before.PathFDs+walkMaxDirFds || after2.PathFDs > before.PathFDs+walkMaxDirFds {
		t.Errorf("O_PATH descriptors after the walks: %d and %d, before %d: more than --max-dir-fds %d",
			after1.PathFDs, after2.PathFDs, before.PathFDs, walkMaxDirFds)
	}
}

// daemonGoroutines asks the daemon for its goroutine count: SIGUSR1 makes
// it log "unionmount: DATE TIME stats: N goroutines, M open fds"
// (cmd/unionmount).
func daemonGoroutines(u *fstest.Union) (int, error) {
	lines := func() []string {
		var out []string
		for _, l := range strings.Split(u.Output(), "\n") {
			if _, rest, ok := strings.Cut(l, " stats: "); ok && strings.HasPrefix(l, "unionmount: ") {
				out = append(out, rest)
			}
		}
		return out
	}
	n := len(lines())
	if err := u.Cmd.Process.Signal(unix.SIGUSR1); err != nil {
		return 0, err
	}
	if !waitFor(10*time.Second, func() bool { return len(lines()) > n }) {
		return 0, fmt.Errorf("no stats line 10s after SIGUSR1")
	}
	var g, fds int
	if _, err := fmt.Sscanf(lines()[n], "%d goroutines, %d open fds", &g, &fds); err != nil {
		return 0, fmt.Errorf("stats line %q: %w", lines()[n], err)
	}
	return g, nil
}
