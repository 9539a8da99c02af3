package copyup

import (
	"bytes"
	"encoding/binary"
	"errors"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/testenv"
)

// layout is a lower, an upper and a workdir, each open as a directory fd,
// the way unionfs hands them to Entry.
type layout struct {
	lower, upper, work       string
	lowerFd, upperFd, workFd int
}

// dirFlags are how the layout opens its directories: O_PATH for the layers
// (exercising the reopen for fsync and listing), O_RDONLY for the workdir.
var dirFlags = struct{ lower, upper, work int }{
	lower: unix.O_PATH | unix.O_DIRECTORY,
	upper: unix.O_PATH | unix.O_DIRECTORY,
	work:  unix.O_RDONLY | unix.O_DIRECTORY,
}

func newLayout(t testing.TB) *layout {
	return newLayoutIn(t, t.TempDir())
}

// newLayoutIn makes lower, upper and work under base unless they exist.
func newLayoutIn(t testing.TB, base string) *layout {
	t.Helper()
	l := &layout{
		lower: filepath.Join(base, "lower"),
		upper: filepath.Join(base, "upper"),
		work:  filepath.Join(base, "work"),
	}
	for _, d := range []string{l.lower, l.upper, l.work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	l.lowerFd = openDir(t, l.lower, dirFlags.lower)
	l.upperFd = openDir(t, l.upper, dirFlags.upper)
	l.workFd = openDir(t, l.work, dirFlags.work)
	return l
}

func openDir(t testing.TB, path string, flags int) int {
	t.Helper()
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// source describes lower/name as the caller of Entry would.
func (l *layout) source(t testing.TB, name string) Source {
	t.Helper()
	return Source{DirFd: l.lowerFd, Name: name, Stat: lstat(t, filepath.Join(l.lower, name))}
}

// copyUp copies lower/name to upper/name.
func (l *layout) copyUp(t testing.TB, name string, opts Options) error {
	t.Helper()
	return Entry(l.source(t, name), l.upperFd, name, l.workFd, opts)
}

func (l *layout) requireWorkEmpty(t testing.TB) {
	t.Helper()
	if names := dirNames(t, l.work); len(names) != 0 {
		t.Fatalf("workdir not empty: %q", names)
	}
}

func (l *layout) requireAbsent(t testing.TB, name string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(l.upper, name)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("upper/%s: want absent, lstat says %v", name, err)
	}
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// keepOwner is the Options that keep the source's owner.
func keepOwner() Options { return Options{UID: -1, GID: -1} }

func lstat(t testing.TB, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatalf("lstat %s: %v", path, err)
	}
	return st
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skipf(t, "needs root (chown, mknod of devices, trusted.* xattrs, mounts)")
	}
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// makeSparse writes a file with data at [0,4K) and [1M,1M+4K) and a
// trailing hole up to 4 MiB.
func makeSparse(t testing.TB, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
	must(t, err)
	defer f.Close()
	_, err = f.WriteAt(bytes.Repeat([]byte("a"), 4096), 0)
	must(t, err)
	_, err = f.WriteAt(bytes.Repeat([]byte("b"), 4096), 1<<20)
	must(t, err)
	must(t, f.Truncate(4<<20))
}

// segments lists a file's data segments as SEEK_DATA/SEEK_HOLE see them.
func segments(t testing.TB, path string) [][2]int64 {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	must(t, err)
	defer unix.Close(fd)
	var st unix.Stat_t
	must(t, unix.Fstat(fd, &st))
	var segs [][2]int64
	must(t, forEachData(fd, st.Size, func(off, n int64) error {
		segs = append(segs, [2]int64{off, off + n})
		return nil
	}))
	return segs
}

// xattrsOf reads every xattr of path, not following it.
func xattrsOf(t testing.TB, path string) map[string]string {
	t.Helper()
	names, err := listXattrs(path)
	must(t, err)
	m := map[string]string{}
	for _, n := range names {
		v, err := getXattr(path, n)
		must(t, err)
		m[n] = string(v)
	}
	return m
}

// wantXattrs is what a copy of a source with these xattrs should carry.
func wantXattrs(src map[string]string, extra map[string][]byte, typ uint32) map[string]string {
	want := map[string]string{}
	for n, v := range src {
		if ruleFor(n) != xattrSkip {
			want[n] = v
		}
	}
	for n, v := range extra {
		if strings.HasPrefix(n, "user.") && typ != unix.S_IFREG && typ != unix.S_IFDIR {
			continue
		}
		want[n] = string(v)
	}
	return want
}

// checkCopy compares the copy at dst with the source's stat and xattrs
// taken before the copy-up.
func checkCopy(t testing.TB, srcPath string, srcSt unix.Stat_t, srcX map[string]string, dst string, opts Options) {
	t.Helper()
	st := lstat(t, dst)
	typ := srcSt.Mode & unix.S_IFMT
	if st.Mode != srcSt.Mode {
		t.Errorf("%s: mode %#o, want %#o", dst, st.Mode, srcSt.Mode)
	}
	wantUID, wantGID := srcSt.Uid, srcSt.Gid
	if opts.UID >= 0 {
		wantUID = uint32(opts.UID)
	}
	if opts.GID >= 0 {
		wantGID = uint32(opts.GID)
	}
	if st.Uid != wantUID || st.Gid != wantGID {
		t.Errorf("%s: owner %d:%d, want %d:%d", dst, st.Uid, st.Gid, wantUID, wantGID)
	}
	if st.Atim != srcSt.Atim || st.Mtim != srcSt.Mtim {
		t.Errorf("%s: atime %v mtime %v, want %v %v", dst, st.Atim, st.Mtim, srcSt.Atim, srcSt.Mtim)
	}
	if (typ == unix.S_IFCHR || typ == unix.S_IFBLK) && st.Rdev != srcSt.Rdev {
		t.Errorf("%s: rdev %#x, want %#x", dst, st.Rdev, srcSt.Rdev)
	}
	switch typ {
	case unix.S_IFREG:
		want, err := os.ReadFile(srcPath)
		must(t, err)
		if opts.SkipData {
			want = nil
		}
		got, err := os.ReadFile(dst)
		must(t, err)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: content differs (%d bytes, want %d)", dst, len(got), len(want))
		}
	case unix.S_IFLNK:
		want, err := os.Readlink(srcPath)
		must(t, err)
		got, err := os.Readlink(dst)
		must(t, err)
		if got != want {
			t.Errorf("%s: target %q, want %q", dst, got, want)
		}
	}
	if got, want := xattrsOf(t, dst), wantXattrs(srcX, opts.Xattrs, typ); !maps.Equal(got, want) {
		t.Errorf("%s: xattrs\n got %q\nwant %q", dst, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
	}
}

// mountTmpfs mounts a fresh tmpfs on dir for the test's duration.
func mountTmpfs(t testing.TB, dir string) {
	t.Helper()
	requireRoot(t)
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=256m"); err != nil {
		testenv.Skipf(t, "cannot mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// mountXFS mounts a fresh reflink-capable xfs image on dir (root, xfsprogs).
func mountXFS(t testing.TB, dir string) {
	t.Helper()
	requireRoot(t)
	mkfs, err := exec.LookPath("mkfs.xfs")
	if err != nil {
		testenv.Skipf(t, "needs mkfs.xfs (apt-get install xfsprogs) for a reflink filesystem")
	}
	img := filepath.Join(t.TempDir(), "xfs.img")
	f, err := os.Create(img)
	must(t, err)
	must(t, f.Truncate(320<<20)) // mkfs.xfs wants 300 MB at least
	must(t, f.Close())
	if out, err := exec.Command(mkfs, "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		testenv.Skipf(t, "mkfs.xfs: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		testenv.Skipf(t, "mount xfs image: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// aclXattr encodes a POSIX ACL xattr value (version 2) from
// (tag, perm, id) entries, which must be in the kernel's order.
func aclXattr(entries ...[3]uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = binary.LittleEndian.AppendUint32(b, e[2])
	}
	return b
}

const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclMask     = 0x10
	aclOther    = 0x20
	aclNoID     = 0xffffffff
)

// capNetBindService is a security.capability value (VFS_CAP_REVISION_2,
// effective) granting CAP_NET_BIND_SERVICE, as setcap writes it.
func capNetBindService() []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0x02000001)
	b = binary.LittleEndian.AppendUint32(b, 1<<unix.CAP_NET_BIND_SERVICE) // permitted[0]
	b = binary.LittleEndian.AppendUint32(b, 0)                            // inheritable[0]
	b = binary.LittleEndian.AppendUint32(b, 0)                            // permitted[1]
	return binary.LittleEndian.AppendUint32(b, 0)                         // inheritable[1]
}
