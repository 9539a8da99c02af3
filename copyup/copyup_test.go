package copyup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// fixture makes one source entry at path.
type fixture struct {
	name string
	root bool // needs root to create
	make func(t testing.TB, path string)
}

func fileWith(data []byte) func(testing.TB, string) {
	return func(t testing.TB, path string) { must(t, os.WriteFile(path, data, 0o640)) }
}

func mknod(mode uint32, dev uint64) func(testing.TB, string) {
	return func(t testing.TB, path string) { must(t, unix.Mknod(path, mode, int(dev))) }
}

func symlinkTo(target string) func(testing.TB, string) {
	return func(t testing.TB, path string) { must(t, os.Symlink(target, path)) }
}

var everyType = []fixture{
	{name: "regular", make: fileWith([]byte("hello, upper\n"))},
	{name: "empty", make: fileWith(nil)},
	{name: "big", make: fileWith(randomBytes(1, 3<<20+123))},
	{name: "sparse", make: makeSparse},
	{name: "dir", make: func(t testing.TB, path string) {
		must(t, os.Mkdir(path, 0o751))
		must(t, os.WriteFile(filepath.Join(path, "child"), []byte("not copied"), 0o644))
	}},
	{name: "symlink", make: symlinkTo("../some/where")},
	{name: "symlink-long", make: symlinkTo(strings.Repeat("long/", 800))},
	{name: "symlink-dangling-abs", make: symlinkTo("/nonexistent/target")},
	{name: "fifo", make: mknod(unix.S_IFIFO|0o620, 0)},
	{name: "socket", make: mknod(unix.S_IFSOCK|0o755, 0)},
	{name: "chardev", root: true, make: mknod(unix.S_IFCHR|0o600, unix.Mkdev(1, 7))},
	{name: "blockdev", root: true, make: mknod(unix.S_IFBLK|0o660, unix.Mkdev(7, 200))},
	{name: "name with spaces\nand newline", make: fileWith([]byte("x"))},
}

// TestEntryEveryType copies every file type and compares the copy with the
// source: type, mode, owner, times, rdev, content, link target, xattrs.
func TestEntryEveryType(t *testing.T) {
	for _, fx := range everyType {
		t.Run(fx.name, func(t *testing.T) {
			if fx.root {
				requireRoot(t)
			}
			l := newLayout(t)
			src := filepath.Join(l.lower, fx.name)
			fx.make(t, src)
			srcSt, srcX := lstat(t, src), xattrsOf(t, src)
			must(t, l.copyUp(t, fx.name, keepOwner()))
			checkCopy(t, src, srcSt, srcX, filepath.Join(l.upper, fx.name), keepOwner())
			l.requireWorkEmpty(t)
			if fx.name == "dir" {
				if names := dirNames(t, filepath.Join(l.upper, "dir")); len(names) != 0 {
					t.Errorf("copied dir has children %q, want none", names)
				}
			}
		})
	}
}

// TestEntryFdKinds runs a copy-up with every directory fd O_PATH and with
// every one O_RDONLY: listing, fsync and the /proc paths work with both.
func TestEntryFdKinds(t *testing.T) {
	for _, flags := range []int{unix.O_PATH | unix.O_DIRECTORY, unix.O_RDONLY | unix.O_DIRECTORY} {
		t.Run(fmt.Sprintf("flags=%#x", flags), func(t *testing.T) {
			base := t.TempDir()
			newLayoutIn(t, base) // make the dirs
			l := &layout{lower: base + "/lower", upper: base + "/upper", work: base + "/work"}
			l.lowerFd, l.upperFd, l.workFd = openDir(t, l.lower, flags), openDir(t, l.upper, flags), openDir(t, l.work, flags)
			must(t, os.WriteFile(filepath.Join(l.lower, "f"), []byte("data"), 0o644))
			must(t, unix.Setxattr(filepath.Join(l.lower, "f"), "user.k", []byte("v"), 0))
			must(t, os.Mkdir(filepath.Join(l.lower, "d"), 0o755))
			must(t, os.Symlink("f", filepath.Join(l.lower, "s")))
			for _, n := range []string{"f", "d", "s"} {
				src := filepath.Join(l.lower, n)
				srcSt, srcX := lstat(t, src), xattrsOf(t, src)
				must(t, l.copyUp(t, n, keepOwner()))
				checkCopy(t, src, srcSt, srcX, filepath.Join(l.upper, n), keepOwner())
			}
			must(t, CleanWorkdir(l.workFd))
			l.requireWorkEmpty(t)
		})
	}
}

// TestEntryMetadata checks what a copy-up must carry (owner, setuid,
// setgid and sticky bits, nanosecond times, user.* and trusted.* xattrs,
// file capabilities, ACLs) and what it must not (every layer's union
// bookkeeping), for a file, a directory and a symlink.
func TestEntryMetadata(t *testing.T) {
	requireRoot(t)
	l := newLayout(t)
	atime := unix.Timespec{Sec: 1_000_000_000, Nsec: 123_456_789}
	mtime := unix.Timespec{Sec: 1_500_000_000, Nsec: 987_654_321}
	private := map[string]string{
		"trusted.overlay.opaque":          "y",
		"trusted.overlay.origin":          "\x00\xfb",
		"trusted.overlay.overlay.escaped": "v",
		"user.overlay.opaque":             "y",
		"user.overlay.whiteout":           "y",
		"user.unionmount.origin":          "lower-origin",
		"user.fuseoverlayfs.opaque":       "y",
	}
	setAll := func(path string, xs map[string]string) {
		for n, v := range xs {
			must(t, unix.Lsetxattr(path, n, []byte(v), 0))
		}
	}

	file := filepath.Join(l.lower, "file")
	must(t, os.WriteFile(file, []byte("#!/bin/true\n"), 0o600))
	must(t, os.Lchown(file, 1234, 5678))
	must(t, unix.Chmod(file, 0o6755)) // after chown, which clears setuid/setgid
	setAll(file, map[string]string{"user.mime": "text/x-shellscript", "trusted.note": "kept", "security.capability": string(capNetBindService())})
	must(t, unix.Setxattr(file, "system.posix_acl_access", aclXattr(
		[3]uint32{aclUserObj, 7, aclNoID}, [3]uint32{aclUser, 5, 1000},
		[3]uint32{aclGroupObj, 5, aclNoID}, [3]uint32{aclMask, 5, aclNoID}, [3]uint32{aclOther, 5, aclNoID}), 0))
	setAll(file, private)

	dir := filepath.Join(l.lower, "dir")
	must(t, os.Mkdir(dir, 0o700))
	must(t, os.Lchown(dir, 1234, 5678))
	must(t, unix.Chmod(dir, 0o3775)) // setgid and sticky
	setAll(dir, map[string]string{"user.dir": "d"})
	must(t, unix.Setxattr(dir, "system.posix_acl_default", aclXattr(
		[3]uint32{aclUserObj, 7, aclNoID}, [3]uint32{aclGroupObj, 5, aclNoID}, [3]uint32{aclOther, 0, aclNoID}), 0))
	setAll(dir, private)

	link := filepath.Join(l.lower, "link")
	must(t, os.Symlink("file", link))
	must(t, os.Lchown(link, 1234, 5678))
	must(t, unix.Lsetxattr(link, "trusted.linknote", []byte("kept"), 0))
	must(t, unix.Lsetxattr(link, "trusted.overlay.opaque", []byte("y"), 0))

	for _, p := range []string{file, dir, link} {
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{atime, mtime}, unix.AT_SYMLINK_NOFOLLOW))
	}

	opts := keepOwner()
	opts.Xattrs = map[string][]byte{"user.unionmount.origin": []byte("new-origin")}
	for _, name := range []string{"file", "dir", "link"} {
		t.Run(name, func(t *testing.T) {
			src := filepath.Join(l.lower, name)
			srcSt, srcX := lstat(t, src), xattrsOf(t, src)
			if srcSt.Atim != atime || srcSt.Mtim != mtime {
				t.Fatalf("fixture times %v %v", srcSt.Atim, srcSt.Mtim)
			}
			must(t, l.copyUp(t, name, opts))
			dst := filepath.Join(l.upper, name)
			checkCopy(t, src, srcSt, srcX, dst, opts)
			got := xattrsOf(t, dst)
			for n := range private {
				if _, ok := got[n]; ok && n != "user.unionmount.origin" {
					t.Errorf("private xattr %s carried up", n)
				}
			}
			switch name {
			case "file":
				for _, n := range []string{"security.capability", "system.posix_acl_access", "trusted.note", "user.mime"} {
					if got[n] != srcX[n] {
						t.Errorf("%s not carried: %q, want %q", n, got[n], srcX[n])
					}
				}
				if got["user.unionmount.origin"] != "new-origin" {
					t.Errorf("origin %q, want the caller's", got["user.unionmount.origin"])
				}
			case "dir":
				if got["system.posix_acl_default"] != srcX["system.posix_acl_default"] {
					t.Errorf("default ACL not carried")
				}
			case "link":
				if _, ok := got["user.unionmount.origin"]; ok {
					t.Errorf("user.* xattr on a symlink")
				}
			}
		})
	}
}

// TestEntryOwnerOption gives the copy the owner the caller asks for, and
// still keeps setuid (owner is set before mode).
func TestEntryOwnerOption(t *testing.T) {
	requireRoot(t)
	l := newLayout(t)
	src := filepath.Join(l.lower, "f")
	must(t, os.WriteFile(src, []byte("x"), 0o644))
	must(t, unix.Chmod(src, 0o4755))
	srcSt, srcX := lstat(t, src), xattrsOf(t, src)
	opts := Options{UID: 4321, GID: 8765}
	must(t, l.copyUp(t, "f", opts))
	checkCopy(t, src, srcSt, srcX, filepath.Join(l.upper, "f"), opts)
}

// TestEntrySkipData gives an empty file with the source's metadata.
func TestEntrySkipData(t *testing.T) {
	l := newLayout(t)
	src := filepath.Join(l.lower, "f")
	must(t, os.WriteFile(src, randomBytes(2, 100_000), 0o640))
	must(t, unix.Setxattr(src, "user.k", []byte("v"), 0))
	must(t, unix.UtimesNano(src, []unix.Timespec{{Sec: 10, Nsec: 1}, {Sec: 20, Nsec: 2}}))
	srcSt, srcX := lstat(t, src), xattrsOf(t, src)
	opts := keepOwner()
	opts.SkipData = true
	must(t, l.copyUp(t, "f", opts))
	dst := filepath.Join(l.upper, "f")
	checkCopy(t, src, srcSt, srcX, dst, opts)
	if st := lstat(t, dst); st.Size != 0 || st.Blocks != 0 {
		t.Errorf("size %d blocks %d, want an empty file", st.Size, st.Blocks)
	}
}

// TestEntryNoFsync takes the volatile path: same result.
func TestEntryNoFsync(t *testing.T) {
	l := newLayout(t)
	for _, fx := range everyType[:6] {
		fx.make(t, filepath.Join(l.lower, fx.name))
	}
	opts := keepOwner()
	opts.NoFsync = true
	for _, fx := range everyType[:6] {
		src := filepath.Join(l.lower, fx.name)
		srcSt, srcX := lstat(t, src), xattrsOf(t, src)
		must(t, l.copyUp(t, fx.name, opts))
		checkCopy(t, src, srcSt, srcX, filepath.Join(l.upper, fx.name), opts)
	}
	l.requireWorkEmpty(t)
}

// TestEntryExists refuses to replace anything in the upper: EEXIST at the
// rename, the existing entry untouched, the workdir clean.
func TestEntryExists(t *testing.T) {
	for _, fx := range []fixture{everyType[0], everyType[4], everyType[5]} {
		for _, existing := range []string{"file", "dir"} {
			t.Run(fx.name+"-over-"+existing, func(t *testing.T) {
				l := newLayout(t)
				fx.make(t, filepath.Join(l.lower, "x"))
				dst := filepath.Join(l.upper, "x")
				if existing == "file" {
					must(t, os.WriteFile(dst, []byte("upper wins"), 0o600))
				} else {
					must(t, os.Mkdir(dst, 0o700))
					must(t, os.WriteFile(filepath.Join(dst, "keep"), nil, 0o600))
				}
				before := lstat(t, dst)
				err := l.copyUp(t, "x", keepOwner())
				var se *StepError
				if !errors.Is(err, unix.EEXIST) || !errors.As(err, &se) || se.Step != StepRename {
					t.Fatalf("err = %v, want EEXIST at %s", err, StepRename)
				}
				after := lstat(t, dst)
				if after.Ino != before.Ino || after.Mode != before.Mode || after.Size != before.Size {
					t.Errorf("existing entry changed: %+v -> %+v", before, after)
				}
				if existing == "file" {
					if b, _ := os.ReadFile(dst); string(b) != "upper wins" {
						t.Errorf("existing content changed to %q", b)
					}
				}
				l.requireWorkEmpty(t)
			})
		}
	}
}

// TestEntryCrossDevice puts the workdir on another filesystem (a tmpfs):
// the rename fails with EXDEV and nothing is left in either place.
func TestEntryCrossDevice(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	must(t, os.Mkdir(filepath.Join(base, "work"), 0o755))
	mountTmpfs(t, filepath.Join(base, "work"))
	l := newLayoutIn(t, base)
	for _, fx := range everyType[:9] {
		fx.make(t, filepath.Join(l.lower, fx.name))
		err := l.copyUp(t, fx.name, keepOwner())
		var se *StepError
		if !errors.Is(err, unix.EXDEV) || !errors.As(err, &se) || se.Step != StepRename {
			t.Errorf("%s: err = %v, want EXDEV at %s", fx.name, err, StepRename)
		}
		l.requireAbsent(t, fx.name)
		l.requireWorkEmpty(t)
	}
}

// TestEntryLowerOnOtherFilesystem copies from a tmpfs lower to the upper:
// FICLONE and copy_file_range give EXDEV, read/write does the work, and
// holes stay holes.
func TestEntryLowerOnOtherFilesystem(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	must(t, os.Mkdir(filepath.Join(base, "lower"), 0o755))
	mountTmpfs(t, filepath.Join(base, "lower"))
	l := newLayoutIn(t, base)
	for _, fx := range everyType[:9] {
		src := filepath.Join(l.lower, fx.name)
		fx.make(t, src)
		srcSt, srcX := lstat(t, src), xattrsOf(t, src)
		must(t, l.copyUp(t, fx.name, keepOwner()))
		checkCopy(t, src, srcSt, srcX, filepath.Join(l.upper, fx.name), keepOwner())
	}
	checkSparseCopy(t, filepath.Join(l.lower, "sparse"), filepath.Join(l.upper, "sparse"))
}

// TestEntryRollback fails each step in turn: before the rename nothing is
// left in the upper or the workdir; after it the entry is complete.
func TestEntryRollback(t *testing.T) {
	injected := errors.New("injected failure")
	for _, fx := range []fixture{everyType[0], everyType[4], everyType[5], everyType[8]} {
		for s := StepCreate; s <= StepSyncDir; s++ {
			t.Run(fmt.Sprintf("%s/%s", fx.name, s), func(t *testing.T) {
				l := newLayout(t)
				fx.make(t, filepath.Join(l.lower, "x"))
				opts := keepOwner()
				opts.hook = func(at Step) error {
					if at == s {
						return injected
					}
					return nil
				}
				err := l.copyUp(t, "x", opts)
				var se *StepError
				if !errors.Is(err, injected) || !errors.As(err, &se) || se.Step != s || se.Name != "x" {
					t.Fatalf("err = %v, want the injected failure at %s", err, s)
				}
				if se.Committed() != (s > StepRename) {
					t.Errorf("Committed() = %v at %s", se.Committed(), s)
				}
				if s > StepRename {
					if _, err := os.Lstat(filepath.Join(l.upper, "x")); err != nil {
						t.Errorf("after the rename the entry must be in place: %v", err)
					}
				} else {
					l.requireAbsent(t, "x")
				}
				l.requireWorkEmpty(t)
			})
		}
	}
}

// TestEntryBadNames refuses names that are not one path component.
func TestEntryBadNames(t *testing.T) {
	l := newLayout(t)
	must(t, os.WriteFile(filepath.Join(l.lower, "f"), nil, 0o644))
	src := l.source(t, "f")
	for _, name := range []string{"", ".", "..", "a/b", "/abs", "nul\x00"} {
		if err := Entry(src, l.upperFd, name, l.workFd, keepOwner()); !errors.Is(err, unix.EINVAL) {
			t.Errorf("dst %q: err = %v, want EINVAL", name, err)
		}
		bad := src
		bad.Name = name
		if err := Entry(bad, l.upperFd, "f", l.workFd, keepOwner()); !errors.Is(err, unix.EINVAL) {
			t.Errorf("src %q: err = %v, want EINVAL", name, err)
		}
	}
	l.requireWorkEmpty(t)
	if names := dirNames(t, l.upper); len(names) != 0 {
		t.Errorf("upper not empty: %q", names)
	}
}

// TestEntrySourceBecameFIFO is a regression guard: the stat says regular
// file but a FIFO sits there now. Opening it must not block forever.
func TestEntrySourceBecameFIFO(t *testing.T) {
	l := newLayout(t)
	p := filepath.Join(l.lower, "x")
	must(t, os.WriteFile(p, []byte("x"), 0o644))
	src := l.source(t, "x")
	must(t, os.Remove(p))
	must(t, unix.Mkfifo(p, 0o644))
	err := Entry(src, l.upperFd, "x", l.workFd, keepOwner())
	if !errors.Is(err, unix.ESTALE) {
		t.Fatalf("err = %v, want ESTALE", err)
	}
	l.requireAbsent(t, "x")
	l.requireWorkEmpty(t)
}

// TestEntryConcurrent runs copy-ups of different entries at once into one
// workdir: temp names never collide.
func TestEntryConcurrent(t *testing.T) {
	l := newLayout(t)
	const n = 32
	for i := range n {
		must(t, os.WriteFile(filepath.Join(l.lower, fmt.Sprint(i)), randomBytes(uint64(i), 10_000+i), 0o644))
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = l.copyUp(t, fmt.Sprint(i), keepOwner()) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("%d: %v", i, err)
			continue
		}
		a, _ := os.ReadFile(filepath.Join(l.lower, fmt.Sprint(i)))
		b, _ := os.ReadFile(filepath.Join(l.upper, fmt.Sprint(i)))
		if string(a) != string(b) {
			t.Errorf("%d: content differs", i)
		}
	}
	l.requireWorkEmpty(t)
}

// TestStepErrorMessage keeps the message short and lowercase with context.
func TestStepErrorMessage(t *testing.T) {
	err := &StepError{Name: "hosts", Step: StepRename, Err: unix.EEXIST}
	if got, want := err.Error(), `copy up "hosts": rename into place: file exists`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
