package reliability

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/fstest"
	"golang.org/x/sys/unix"
)

// target is one configuration a fault test runs on.
type target struct {
	name   string
	kernel bool // kernel overlayfs, the reference
	args   []string
}

var (
	unionTargets = []target{{"passthrough", false, nil}, {"no-passthrough", false, []string{"--no-passthrough"}}}
	allTargets   = append(append([]target(nil), unionTargets...), target{"kernel", true, nil})
)

// mountTarget mounts tg over one lower; for unionmount it returns the daemon.
func mountTarget(t *testing.T, tg target, lower, upper, work, mnt string) *fstest.Union {
	t.Helper()
	if tg.kernel {
		fstest.MountKernelOverlay(t, []string{lower}, upper, work, mnt)
		return nil
	}
	return fstest.MountUnion(t, []string{lower}, upper, work, mnt, tg.args...)
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// numberedFiles are lower files f000, f001, ... with the given content.
func numberedFiles(n int, body func(i int) []byte) []fstest.Applier {
	fx := make([]fstest.Applier, n)
	for i := range fx {
		fx[i] = fstest.CreateFile(fmt.Sprintf("f%03d", i), body(i), 0o644)
	}
	return fx
}

func appendFile(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// freeBytes is what statfs says is free on the filesystem of p.
func freeBytes(t *testing.T, p string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bfree) * st.Bsize
}

// waitFor polls cond every 10 ms until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}
}

// TestUpperFull puts the upper and workdir on an 8 MiB tmpfs, with lowers
// on disk. Copying up a file bigger than the space, directly or under
// directories that are copied up first, fails with ENOSPC for the writer
// and leaves no part of the file in the upper or the workdir; a new file
// that fills the space gets ENOSPC; once it is removed, the space comes
// back (the daemon keeps no descriptor of it) and the same copy-up works.
func TestUpperFull(t *testing.T) {
	fstest.RequireFUSE(t)
	rng := rand.New(rand.NewPCG(*seedFlag, 10))
	big := randomBytes(rng, 12<<20)
	mid := randomBytes(rng, 3<<20)
	for _, tg := range allTargets {
		t.Run(tg.name, func(t *testing.T) {
			base := publicTempDir(t)
			lower, small, mnt := filepath.Join(base, "lower"), filepath.Join(base, "small"), filepath.Join(base, "mnt")
			for _, d := range []string{lower, small, mnt} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := fstest.Apply(lower,
				fstest.CreateFile("big", big, 0o644),
				fstest.CreateFile("mid", mid, 0o644),
				fstest.CreateDir("deep", 0o755), fstest.CreateDir("deep/a", 0o755), fstest.CreateDir("deep/a/b", 0o755),
				fstest.CreateFile("deep/a/b/big", big, 0o644),
			); err != nil {
				t.Fatal(err)
			}
			mountTmpfs(t, small, "size=8m")
			upper, work := filepath.Join(small, "upper"), filepath.Join(small, "work")
			for _, d := range []string{upper, work} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			mountTarget(t, tg, lower, upper, work, mnt)
			l := layers{root: base, lower: lower, upper: upper, work: work, mnt: mnt}
			bigSum, midSum := sha256.Sum256(big), sha256.Sum256(mid)

			noHalfCopy := func(what, rel string, want [32]byte) {
				t.Helper()
				if _, err := os.Lstat(filepath.Join(upper, rel)); err == nil {
					t.Errorf("%s: a copy of %s is in the upper", what, rel)
				}
				if left := l.workLeftovers(t); len(left) > 0 {
					t.Errorf("%s: the workdir holds %q", what, left)
				}
				if got := fileSum(t, filepath.Join(mnt, rel)); got != want {
					t.Errorf("%s: %s no longer shows the lower content", what, rel)
				}
			}
			wantENOSPC := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, unix.ENOSPC) {
					t.Errorf("%s: got %v, want ENOSPC", what, err)
				}
			}

			wantENOSPC("append to a 12 MiB lower file", appendFile(filepath.Join(mnt, "big"), []byte("X")))
			noHalfCopy("after the failed copy-up for append", "big", bigSum)
			wantENOSPC("truncate a 12 MiB lower file up", os.Truncate(filepath.Join(mnt, "big"), int64(len(big))+1))
			noHalfCopy("after the failed copy-up for truncate", "big", bigSum)
			wantENOSPC("append under lower-only dirs", appendFile(filepath.Join(mnt, "deep/a/b/big"), []byte("X")))
			noHalfCopy("after the failed copy-up under dirs", "deep/a/b/big", bigSum)

			// Fill the rest with a new file.
			baseline := freeBytes(t, small)
			f, err := os.Create(filepath.Join(mnt, "fill"))
			if err != nil {
				t.Fatal(err)
			}
			chunk := bytes.Repeat([]byte{0xa5}, 1<<20)
			var werr error
			written := 0
			for i := 0; i < 16 && werr == nil; i++ {
				var n int
				n, werr = f.Write(chunk)
				written += n
			}
			if cerr := f.Close(); werr == nil {
				werr = cerr
			}
			wantENOSPC(fmt.Sprintf("fill the upper (%d bytes written)", written), werr)
			wantENOSPC("append to a 3 MiB lower file, upper full", appendFile(filepath.Join(mnt, "mid"), []byte("X")))
			noHalfCopy("after the failed copy-up, upper full", "mid", midSum)
			if err := os.Remove(filepath.Join(mnt, "fill")); err != nil {
				t.Fatal(err)
			}
			if !waitFor(5*time.Second, func() bool { return freeBytes(t, small) >= baseline-64<<10 }) {
				t.Errorf("space not given back after removing the filler: %d bytes free, %d before", freeBytes(t, small), baseline)
			}

			// The space is back: the same copy-ups work.
			if err := appendFile(filepath.Join(mnt, "mid"), []byte("X")); err != nil {
				t.Fatalf("copy-up once there is space: %v", err)
			}
			if got := fileSum(t, filepath.Join(mnt, "mid")); got != sha256.Sum256(append(bytes.Clone(mid), 'X')) {
				t.Error("mid after the copy-up: wrong content")
			}
			t.Logf("%s: every ENOSPC reported, no partial copy-up, %d bytes of filler written", tg.name, written)
		})
	}
}

// TestTruncOpenOfBigLowerFileCopiesNoData: open(O_TRUNC) of a lower file
// needs no data copy (overlayfs copies up empty), so it works with an upper
// smaller than the file. Without FUSE_ATOMIC_O_TRUNC the kernel sends OPEN
// without O_TRUNC and a SETATTR(size 0) after it, so the daemon copies all
// the data first: slow for big files, and ENOSPC on a small upper.
func TestTruncOpenOfBigLowerFileCopiesNoData(t *testing.T) {
	fstest.RequireFUSE(t)
	big := randomBytes(rand.New(rand.NewPCG(*seedFlag, 11)), 12<<20)
	for _, tg := range allTargets {
		t.Run(tg.name, func(t *testing.T) {
			base := publicTempDir(t)
			lower, small, mnt := filepath.Join(base, "lower"), filepath.Join(base, "small"), filepath.Join(base, "mnt")
			for _, d := range []string{lower, small, mnt} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(lower, "big"), big, 0o644); err != nil {
				t.Fatal(err)
			}
			mountTmpfs(t, small, "size=8m")
			upper, work := filepath.Join(small, "upper"), filepath.Join(small, "work")
			for _, d := range []string{upper, work} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			mountTarget(t, tg, lower, upper, work, mnt)
			if err := os.WriteFile(filepath.Join(mnt, "big"), []byte("truncated\n"), 0o644); err != nil {
				t.Fatalf("O_TRUNC open of a 12 MiB lower file with 8 MiB of upper: %v", err)
			}
			if b, err := os.ReadFile(filepath.Join(mnt, "big")); err != nil || string(b) != "truncated\n" {
				t.Errorf("after O_TRUNC and a write: %q, %v", b, err)
			}
		})
	}
}

// TestUpperOutOfInodes: an upper without free inodes refuses whiteouts,
// copy-ups, renames and new entries with ENOSPC, and shows the lower
// entries unchanged.
func TestUpperOutOfInodes(t *testing.T) {
	fstest.RequireFUSE(t)
	for _, tg := range allTargets {
		t.Run(tg.name, func(t *testing.T) {
			base := publicTempDir(t)
			lower, small, mnt := filepath.Join(base, "lower"), filepath.Join(base, "small"), filepath.Join(base, "mnt")
			for _, d := range []string{lower, small, mnt} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			var fx []fstest.Applier
			for i := 0; i < 4; i++ {
				fx = append(fx, fstest.CreateFile(fmt.Sprintf("l%d", i), []byte(fmt.Sprintf("lower %d\n", i)), 0o644))
			}
			fx = append(fx, fstest.CreateDir("m", 0o755), fstest.CreateFile("m/c", []byte("child\n"), 0o644))
			if err := fstest.Apply(lower, fx...); err != nil {
				t.Fatal(err)
			}
			mountTmpfs(t, small, "size=8m,nr_inodes=64")
			upper, work := filepath.Join(small, "upper"), filepath.Join(small, "work")
			for _, d := range []string{upper, work} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			mountTarget(t, tg, lower, upper, work, mnt)
			l := layers{root: base, lower: lower, upper: upper, work: work, mnt: mnt}
			// Use up the inodes with new files.
			n := 0
			for ; n < 100; n++ {
				err := os.WriteFile(filepath.Join(mnt, fmt.Sprintf("n%03d", n)), nil, 0o644)
				if errors.Is(err, unix.ENOSPC) {
					break
				}
				if err != nil {
					t.Fatalf("create n%03d: %v", n, err)
				}
			}
			if n == 100 {
				t.Fatal("64 inodes gave room for 100 files")
			}
			results := map[string]string{}
			visible := func(rel string) bool {
				_, err := os.Lstat(filepath.Join(mnt, rel))
				return err == nil
			}
			results["unlink lower file"] = errnoName(os.Remove(filepath.Join(mnt, "l0")))
			if (results["unlink lower file"] == "") == visible("l0") {
				t.Errorf("unlink l0 gave %q but l0 visible=%v", results["unlink lower file"], visible("l0"))
			}
			results["rename lower file"] = errnoName(os.Rename(filepath.Join(mnt, "l1"), filepath.Join(mnt, "l1b")))
			if ok := results["rename lower file"] == ""; ok != visible("l1b") || ok == visible("l1") {
				t.Errorf("rename l1 gave %q but l1 visible=%v, l1b visible=%v", results["rename lower file"], visible("l1"), visible("l1b"))
			}
			results["copy-up lower file"] = errnoName(appendFile(filepath.Join(mnt, "l2"), []byte("X")))
			if results["copy-up lower file"] != "" {
				if b, _ := os.ReadFile(filepath.Join(mnt, "l2")); string(b) != "lower 2\n" {
					t.Errorf("failed copy-up changed l2 to %q", b)
				}
			}
			results["mkdir"] = errnoName(os.Mkdir(filepath.Join(mnt, "newdir"), 0o755))
			results["rm -r merged dir"] = errnoName(os.RemoveAll(filepath.Join(mnt, "m")))
			if results["rm -r merged dir"] != "" && !visible("m") {
				t.Errorf("rm -r m failed with %s but m is gone", results["rm -r merged dir"])
			}
			t.Logf("%s: %d files filled the inodes; then %v", tg.name, n, results)
			if !tg.kernel {
				for op, errno := range results {
					if errno != "ENOSPC" {
						t.Errorf("%s with no free inode: got %q, want ENOSPC", op, errno)
					}
				}
			}
			if left := l.workLeftovers(t); len(left) > 0 && !tg.kernel {
				t.Errorf("the workdir holds %q", left)
			}
			// One free inode is enough again.
			if err := os.Remove(filepath.Join(mnt, "n000")); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(mnt, "l3")); err != nil {
				t.Errorf("unlink a lower file once an inode is free: %v", err)
			}
		})
	}
}

// TestDescriptorExhaustion lowers the daemon's RLIMIT_NOFILE to a few
// descriptors above what it uses idle and opens 200 files through the
// mount: the opens beyond the limit fail (EMFILE), a copy-up in that state
// fails without leaving anything behind, the daemon keeps serving, and
// once the files are closed its descriptors return to the baseline and
// every open works again.
func TestDescriptorExhaustion(t *testing.T) {
	fstest.RequireFUSE(t)
	const files = 200
	for _, tg := range unionTargets {
		t.Run(tg.name, func(t *testing.T) {
			l := newLayers(t, "")
			if err := fstest.Apply(l.lower, numberedFiles(files, func(i int) []byte { return []byte(fmt.Sprintf("file %d\n", i)) })...); err != nil {
				t.Fatal(err)
			}
			u := l.mount(t, tg.args...)
			// Warm up the splice pipes and the Go runtime's descriptors.
			for i := 0; i < 4; i++ {
				if _, err := os.ReadFile(filepath.Join(l.mnt, fmt.Sprintf("f%03d", i))); err != nil {
					t.Fatal(err)
				}
			}
			before, err := readProcStats(u.Pid)
			if err != nil {
				t.Fatal(err)
			}
			limit := uint64(before.FDs + 24)
			if err := unix.Prlimit(u.Pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: limit, Max: limit}, nil); err != nil {
				t.Fatalf("prlimit: %v", err)
			}

			var open []*os.File
			errs := map[string]int{}
			for i := 0; i < files-1; i++ {
				f, err := os.Open(filepath.Join(l.mnt, fmt.Sprintf("f%03d", i)))
				if err != nil {
					errs[errnoName(err)]++
					continue
				}
				open = append(open, f)
			}
			t.Logf("limit %d descriptors (idle: %v): %d of %d opens succeeded, errors %v", limit, before, len(open), files-1, errs)
			for e := range errs {
				if e != "EMFILE" && e != "ENFILE" {
					t.Errorf("open beyond the daemon's descriptor limit: %s, want EMFILE", e)
				}
			}
			if len(open) == files-1 {
				t.Fatal("no open failed: the limit did not bite")
			}
			// A copy-up now fails cleanly.
			last := fmt.Sprintf("f%03d", files-1)
			cerr := appendFile(filepath.Join(l.mnt, last), []byte("X"))
			t.Logf("copy-up with no descriptor to spare: %v", cerr)
			if _, err := os.Lstat(filepath.Join(l.upper, last)); cerr != nil && err == nil {
				t.Errorf("copy-up failed (%v) but left %s in the upper", cerr, last)
			}
			if left := l.workLeftovers(t); len(left) > 0 {
				t.Errorf("the workdir holds %q", left)
			}
			var st unix.Stat_t
			if err := unix.Stat(l.mnt, &st); err != nil {
				t.Errorf("stat of the root while out of descriptors: %v", err)
			}
			for _, f := range open {
				if _, err := f.Read(make([]byte, 16)); err != nil {
					t.Errorf("read of %s while out of descriptors: %v", f.Name(), err)
				}
				f.Close()
			}
			// Back to the baseline (RELEASE is asynchronous).
			var after procStats
			if !waitFor(5*time.Second, func() bool {
				after, _ = readProcStats(u.Pid)
				return layerFDs(after, l.root) <= layerFDs(before, l.root)
			}) {
				t.Errorf("daemon descriptors after closing everything: %v; before: %v", after, before)
			}
			for i := 0; i < files; i++ {
				p := filepath.Join(l.mnt, fmt.Sprintf("f%03d", i))
				if _, err := os.ReadFile(p); err != nil {
					t.Errorf("after recovery: %v", err)
				}
			}
			if cerr != nil {
				if err := appendFile(filepath.Join(l.mnt, last), []byte("X")); err != nil {
					t.Errorf("copy-up after recovery: %v", err)
				}
			}
			// RELEASE comes after close(2) returns, asynchronously: wait for
			// the last copy-up's descriptor to go.
			if !waitFor(5*time.Second, func() bool {
				after, _ = readProcStats(u.Pid)
				return layerFDs(after, l.root) <= layerFDs(before, l.root)
			}) {
				t.Errorf("descriptor leak: 5s after recovery the daemon has %v, before %v\n%q", after, before, after.Paths)
			}
			t.Logf("after recovery: %v", after)
		})
	}
}

// TestLowerChangedUnderneath changes and removes lower directories and
// files while they are mounted and in use. Overlayfs calls that undefined
// behaviour; here it must never hang or crash the daemon. What each access
// saw is logged (run with -v); the descriptors opened before the change
// keep reading what they opened.
func TestLowerChangedUnderneath(t *testing.T) {
	fstest.RequireFUSE(t)
	for _, c := range []struct {
		name string
		args []string
	}{{"cache", nil}, {"no-cache", []string{"--cache-entries", "0"}}} {
		t.Run(c.name, func(t *testing.T) {
			l := newLayers(t, "")
			if err := fstest.Apply(l.lower,
				fstest.CreateDir("gone", 0o755),
				fstest.CreateFile("gone/a", []byte("a\n"), 0o644),
				fstest.CreateFile("gone/b", []byte("b, opened before the removal\n"), 0o644),
				fstest.CreateDir("gone/sub", 0o755),
				fstest.CreateFile("gone/sub/c", []byte("c\n"), 0o644),
				fstest.CreateFile("swap", []byte("a file, then a dir\n"), 0o644),
				fstest.CreateDir("swapdir", 0o755),
				fstest.CreateFile("swapdir/x", []byte("x\n"), 0o644),
				fstest.CreateFile("grow", []byte("short\n"), 0o644),
				fstest.CreateDir("keep", 0o755),
				fstest.CreateFile("keep/k", []byte("k\n"), 0o644),
				fstest.SetXattr("keep/k", "user.note", []byte("lower")),
			); err != nil {
				t.Fatal(err)
			}
			u := l.mount(t, c.args...)
			m := func(rel string) string { return filepath.Join(l.mnt, rel) }

			// Use everything once, and keep some of it open.
			for _, p := range []string{"gone", "gone/sub", "swapdir"} {
				if _, err := os.ReadDir(m(p)); err != nil {
					t.Fatal(err)
				}
			}
			for _, p := range []string{"gone/a", "swap", "grow", "keep/k"} {
				if _, err := os.ReadFile(m(p)); err != nil {
					t.Fatal(err)
				}
			}
			fb, err := os.Open(m("gone/b"))
			if err != nil {
				t.Fatal(err)
			}
			defer fb.Close()
			dh, err := os.Open(m("gone/sub"))
			if err != nil {
				t.Fatal(err)
			}
			defer dh.Close()

			var observed []string
			try := func(what string, f func() (string, error)) {
				t.Helper()
				var val string
				err, hung := within(5*time.Second, func() error {
					var err error
					val, err = f()
					return err
				})
				if hung {
					u.Cmd.Process.Signal(unix.SIGQUIT)
					t.Fatalf("%s: hung for 5s (daemon stacks in its output)", what)
				}
				res := "ok"
				if err != nil {
					res = errnoName(err)
				}
				if val != "" {
					res += " " + val
				}
				observed = append(observed, fmt.Sprintf("%-34s %s", what, res))
				select {
				case <-u.Done():
					t.Fatalf("%s: the daemon exited:\n%s", what, u.Output())
				default:
				}
			}
			stat := func(rel string) func() (string, error) {
				return func() (string, error) {
					fi, err := os.Lstat(m(rel))
					if err != nil {
						return "", err
					}
					return fmt.Sprintf("%v size %d", fi.Mode(), fi.Size()), nil
				}
			}
			list := func(rel string) func() (string, error) {
				return func() (string, error) {
					names, err := readNames(m(rel))
					sort.Strings(names)
					return strings.Join(names, ","), err
				}
			}
			read := func(rel string) func() (string, error) {
				return func() (string, error) {
					b, err := os.ReadFile(m(rel))
					return fmt.Sprintf("%q", b), err
				}
			}
			write := func(rel string) func() (string, error) {
				return func() (string, error) { return "", appendFile(m(rel), []byte("w\n")) }
			}

			if err := os.RemoveAll(filepath.Join(l.lower, "gone")); err != nil {
				t.Fatal(err)
			}
			try("removed dir: stat", stat("gone"))
			try("removed dir: list", list("gone"))
			try("removed dir: stat child", stat("gone/a"))
			try("removed dir: read child", read("gone/a"))
			try("removed dir: read open fd", func() (string, error) {
				b := make([]byte, 100)
				n, err := fb.ReadAt(b, 0)
				if errors.Is(err, io.EOF) {
					err = nil
				}
				if string(b[:n]) != "b, opened before the removal\n" {
					t.Errorf("a descriptor opened before the removal read %q", b[:n])
				}
				return fmt.Sprintf("%q", b[:n]), err
			})
			try("removed dir: list open handle", func() (string, error) {
				names, err := dh.Readdirnames(-1)
				return strings.Join(names, ","), err
			})
			try("removed dir: create in it", func() (string, error) {
				return "", os.WriteFile(m("gone/new"), []byte("n"), 0o644)
			})
			try("removed dir: write child", write("gone/b"))
			try("removed dir: unlink child", func() (string, error) { return "", os.Remove(m("gone/a")) })
			try("removed dir: rmdir", func() (string, error) { return "", os.RemoveAll(m("gone")) })
			try("removed dir: stat again", stat("gone"))

			if err := os.Remove(filepath.Join(l.lower, "swap")); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(filepath.Join(l.lower, "swap"), 0o755); err != nil {
				t.Fatal(err)
			}
			try("file became dir: stat", stat("swap"))
			try("file became dir: read", read("swap"))
			try("file became dir: list", list("swap"))
			try("file became dir: write", write("swap"))

			if err := os.RemoveAll(filepath.Join(l.lower, "swapdir")); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(l.lower, "swapdir"), []byte("now a file\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			try("dir became file: stat", stat("swapdir"))
			try("dir became file: list", list("swapdir"))
			try("dir became file: stat child", stat("swapdir/x"))
			try("dir became file: read", read("swapdir"))

			if err := os.WriteFile(filepath.Join(l.lower, "grow"), bytes.Repeat([]byte("longer "), 100), 0o644); err != nil {
				t.Fatal(err)
			}
			try("file rewritten: stat", stat("grow"))
			try("file rewritten: read", func() (string, error) {
				b, err := os.ReadFile(m("grow"))
				return fmt.Sprintf("%d bytes", len(b)), err
			})
			try("file rewritten: copy-up", write("grow"))

			// The whole lower moves away, and something else takes its path.
			moved := l.lower + ".moved"
			if err := os.Rename(l.lower, moved); err != nil {
				t.Fatal(err)
			}
			try("lower moved: stat", stat("keep/k"))
			try("lower moved: read", read("keep/k"))
			try("lower moved: getxattr", func() (string, error) {
				b := make([]byte, 64)
				n, err := unix.Lgetxattr(m("keep/k"), "user.note", b)
				return string(b[:max(n, 0)]), err
			})
			if err := os.MkdirAll(filepath.Join(l.lower, "keep", "k"), 0o755); err != nil {
				t.Fatal(err)
			}
			try("lower path reused: getxattr", func() (string, error) {
				b := make([]byte, 64)
				n, err := unix.Lgetxattr(m("keep/k"), "user.note", b)
				return string(b[:max(n, 0)]), err
			})
			try("lower path reused: list keep", list("keep"))
			if err := os.RemoveAll(moved); err != nil {
				t.Fatal(err)
			}
			try("lower removed: list root", list(""))
			try("lower removed: stat", stat("keep/k"))
			try("lower removed: read", read("keep/k"))
			try("lower removed: create", func() (string, error) {
				return "", os.WriteFile(m("fresh"), []byte("f"), 0o644)
			})
			try("lower removed: read new", read("fresh"))
			t.Logf("%s: what the mount showed:\n  %s", c.name, strings.Join(observed, "\n  "))

			// What doc.go and docs/semantics.md promise, step by step.
			rootAfterRemoval := "ENOENT" // without the cache the merge has no layer to read
			if c.args == nil {
				rootAfterRemoval = "ok gone,grow,keep,swap,swapdir" // the cache trusts lowers not to change
			}
			want := [][2]string{
				{"removed dir: stat", "ENOENT"},
				{"removed dir: list", "ENOENT"},
				{"removed dir: stat child", "ENOENT"},
				{"removed dir: read child", `ENOENT ""`},
				{"removed dir: read open fd", `ok "b, opened before the removal\n"`},
				{"removed dir: list open handle", "ENOENT"},
				{"removed dir: create in it", "ENOENT"},
				{"removed dir: write child", "ENOENT"},
				{"removed dir: unlink child", "ENOENT"},
				{"removed dir: rmdir", "ok"}, // os.RemoveAll of what is gone
				{"removed dir: stat again", "ENOENT"},
				{"file became dir: stat", "ok drwxr-xr-x size 4096"},
				{"file became dir: read", `EISDIR ""`},
				{"file became dir: list", "ok"},
				{"file became dir: write", "EISDIR"},
				{"dir became file: stat", "ok -rw-r--r-- size 11"},
				{"dir became file: list", "ENOTDIR"},
				{"dir became file: stat child", "ENOTDIR"},
				{"dir became file: read", `ok "now a file\n"`},
				{"file rewritten: stat", "ok -rw-r--r-- size 700"},
				{"file rewritten: read", "ok 700 bytes"},
				{"file rewritten: copy-up", "ok"},
				{"lower moved: stat", "ok -rw-r--r-- size 2"},
				{"lower moved: read", `ok "k\n"`},
				{"lower moved: getxattr", "ok lower"},
				{"lower path reused: getxattr", "ok lower"}, // the layer's descriptor, not its path
				{"lower path reused: list keep", "ok k"},
				{"lower removed: list root", rootAfterRemoval},
				{"lower removed: stat", "ENOENT"},
				{"lower removed: read", `ENOENT ""`},
				{"lower removed: create", "ok"},
				{"lower removed: read new", `ok "f"`},
			}
			if len(observed) != len(want) {
				t.Fatalf("%d steps observed, %d expected", len(observed), len(want))
			}
			for i, w := range want {
				if exp := fmt.Sprintf("%-34s %s", w[0], w[1]); observed[i] != exp {
					t.Errorf("%s: got %q, want %q", w[0], strings.TrimSpace(observed[i][34:]), w[1])
				}
			}
			fb.Close()
			dh.Close()
			if err := u.Unmount(); err != nil {
				t.Errorf("unmount after the lower changed: %v", err)
			}
		})
	}
}

func readNames(p string) ([]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// TestUnmountWhileOpen: `fusermount3 -u` with files open fails (busy) and
// changes nothing; `fusermount3 -u -z` detaches the mount, the open files
// keep working, and the daemon exits 0 once the last one is closed.
func TestUnmountWhileOpen(t *testing.T) {
	fstest.RequireFUSE(t)
	for _, tg := range unionTargets {
		t.Run(tg.name, func(t *testing.T) {
			l := newLayers(t, "")
			if err := fstest.Apply(l.lower,
				fstest.CreateFile("r", []byte("read me\n"), 0o644),
				fstest.CreateDir("d", 0o755),
				fstest.CreateFile("d/x", nil, 0o644),
			); err != nil {
				t.Fatal(err)
			}
			u := l.mount(t, tg.args...)
			r, err := os.Open(filepath.Join(l.mnt, "r"))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			w, err := os.Create(filepath.Join(l.mnt, "w"))
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			d, err := os.Open(filepath.Join(l.mnt, "d"))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if _, err := w.WriteString("before\n"); err != nil {
				t.Fatal(err)
			}

			out, err := exec.Command("fusermount3", "-u", l.mnt).CombinedOutput()
			if err == nil {
				t.Fatalf("fusermount3 -u with open files succeeded")
			}
			t.Logf("fusermount3 -u with files open: %v: %s", err, bytes.TrimSpace(out))
			if ok, _ := fstest.IsMountpoint(l.mnt); !ok {
				t.Fatal("the failed unmount removed the mount")
			}
			b := make([]byte, 8)
			if _, err := r.ReadAt(b, 0); err != nil || string(b) != "read me\n" {
				t.Errorf("read after the failed unmount: %q, %v", b, err)
			}

			if out, err := exec.Command("fusermount3", "-u", "-z", l.mnt).CombinedOutput(); err != nil {
				t.Fatalf("fusermount3 -u -z: %v: %s", err, out)
			}
			if ok, _ := fstest.IsMountpoint(l.mnt); ok {
				t.Error("still a mount point after the lazy unmount")
			}
			if _, err := r.ReadAt(b, 0); err != nil || string(b) != "read me\n" {
				t.Errorf("read after the lazy unmount: %q, %v", b, err)
			}
			if _, err := w.WriteString("after\n"); err != nil {
				t.Errorf("write after the lazy unmount: %v", err)
			}
			if err := w.Sync(); err != nil {
				t.Errorf("fsync after the lazy unmount: %v", err)
			}
			if names, err := d.Readdirnames(-1); err != nil || len(names) != 1 {
				t.Errorf("readdir after the lazy unmount: %q, %v", names, err)
			}
			select {
			case <-u.Done():
				t.Fatal("the daemon exited while files were open")
			default:
			}
			r.Close()
			w.Close()
			d.Close()
			select {
			case <-u.Done():
			case <-time.After(10 * time.Second):
				u.Cmd.Process.Signal(unix.SIGQUIT)
				t.Fatal("the daemon did not exit within 10s of the last close after a lazy unmount")
			}
			if err := u.Unmount(); err != nil {
				t.Error(err)
			}
			got, err := os.ReadFile(filepath.Join(l.upper, "w"))
			if err != nil || string(got) != "before\nafter\n" {
				t.Errorf("upper w after the lazy unmount: %q, %v", got, err)
			}
		})
	}
}

// ioLoad is a few goroutines writing and reading files of one mount
// through descriptors they keep open.
type ioLoad struct {
	wg      sync.WaitGroup
	stop    atomic.Bool
	bytes   atomic.Int64
	mu      sync.Mutex
	errs    map[string]int
	synced  []int64 // per writer: bytes known durable (fsync returned)
	workers int
}

func startIOLoad(t *testing.T, mnt string, workers int) *ioLoad {
	t.Helper()
	ld := &ioLoad{errs: map[string]int{}, synced: make([]int64, workers), workers: workers}
	var files []*os.File
	for i := 0; i < workers; i++ {
		f, err := os.OpenFile(filepath.Join(mnt, fmt.Sprintf("io%d", i)), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	for i, f := range files {
		ld.wg.Add(1)
		go func() {
			defer ld.wg.Done()
			defer f.Close()
			chunk := bytes.Repeat([]byte{byte('a' + i)}, 256<<10)
			buf := make([]byte, len(chunk))
			var off int64
			for n := 0; !ld.stop.Load(); n++ {
				if _, err := f.WriteAt(chunk, off); err != nil {
					ld.fail(err)
					return
				}
				if _, err := f.ReadAt(buf, off); err != nil {
					ld.fail(err)
					return
				}
				off += int64(len(chunk))
				ld.bytes.Add(int64(2 * len(chunk)))
				if off >= 16<<20 {
					off = 0
				}
				if n%8 == 7 {
					if err := f.Sync(); err != nil {
						ld.fail(err)
						return
					}
					ld.mu.Lock()
					ld.synced[i] = max(ld.synced[i], off)
					ld.mu.Unlock()
				}
			}
		}()
	}
	return ld
}

func (ld *ioLoad) fail(err error) {
	ld.mu.Lock()
	ld.errs[errnoName(err)]++
	ld.mu.Unlock()
}

// finish stops the load and waits at most d for it.
func (ld *ioLoad) finish(d time.Duration) bool {
	ld.stop.Store(true)
	done := make(chan struct{})
	go func() { ld.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// TestSigtermDuringIO sends SIGTERM to the daemon while six writers keep
// files busy: the mount is detached at once, the writers go on through
// their descriptors without an error, and the daemon exits 0 once they
// stop. A second SIGTERM makes it exit without waiting: the writers then
// get errors (ENOTCONN), not a hang.
func TestSigtermDuringIO(t *testing.T) {
	fstest.RequireFUSE(t)
	t.Run("once", func(t *testing.T) {
		l := newLayers(t, "")
		u := l.mount(t)
		ld := startIOLoad(t, l.mnt, 6)
		time.Sleep(time.Second) // let the I/O run before the signal
		if err := u.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if !waitFor(5*time.Second, func() bool { ok, _ := fstest.IsMountpoint(l.mnt); return !ok }) {
			t.Error("the mount was not detached within 5s of SIGTERM")
		}
		before := ld.bytes.Load()
		time.Sleep(500 * time.Millisecond) // I/O goes on through the open files
		during := ld.bytes.Load() - before
		if !ld.finish(10 * time.Second) {
			u.Cmd.Process.Signal(unix.SIGQUIT)
			t.Fatal("the writers hung after SIGTERM")
		}
		if len(ld.errs) > 0 {
			t.Errorf("writers saw errors after SIGTERM with their files open: %v", ld.errs)
		}
		if during == 0 {
			t.Error("no I/O went through the open files after the detach")
		}
		select {
		case <-u.Done():
		case <-time.After(10 * time.Second):
			u.Cmd.Process.Signal(unix.SIGQUIT)
			t.Fatal("the daemon did not exit within 10s of the writers closing their files")
		}
		if err := u.Unmount(); err != nil {
			t.Error(err)
		}
		for i, n := range ld.synced {
			st, err := os.Stat(filepath.Join(l.upper, fmt.Sprintf("io%d", i)))
			if err != nil || st.Size() < n {
				t.Errorf("io%d: %d bytes fsync'd, the upper has %v (%v)", i, n, st.Size(), err)
			}
		}
		t.Logf("%d MiB of I/O in total, %d KiB after the detach", ld.bytes.Load()>>20, during>>10)
	})
	t.Run("twice", func(t *testing.T) {
		l := newLayers(t, "")
		u := l.mount(t)
		ld := startIOLoad(t, l.mnt, 6)
		time.Sleep(500 * time.Millisecond) // let the I/O run before the signals
		u.Cmd.Process.Signal(syscall.SIGTERM)
		waitFor(5*time.Second, func() bool { ok, _ := fstest.IsMountpoint(l.mnt); return !ok })
		u.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-u.Done():
		case <-time.After(10 * time.Second):
			u.Cmd.Process.Signal(unix.SIGQUIT)
			t.Fatal("the daemon did not exit within 10s of a second SIGTERM")
		}
		if !ld.finish(10 * time.Second) {
			t.Fatal("the writers hung once the daemon was gone")
		}
		t.Logf("after the daemon left, the writers saw %v", ld.errs)
		for e := range ld.errs {
			if e != "ENOTCONN" && e != "ECONNABORTED" {
				t.Errorf("writers saw %s once the daemon was gone, want ENOTCONN", e)
			}
		}
		if err := u.Unmount(); err != nil {
			t.Error(err)
		}
	})
}
