package posix

// Copy-up economy and atomicity, read-only mounts, statfs and large reads,
// through the mount and, where it has the same semantics, through kernel
// overlayfs over the same layers.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// mountTmpfs mounts a tmpfs with opts on dir until the test ends
// (registered before the mounts made on it, so it is undone after them).
func mountTmpfs(t *testing.T, dir, opts string) {
	t.Helper()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, opts+",mode=0755"); err != nil {
		t.Fatalf("mount tmpfs on %s (%s): %v", dir, opts, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount tmpfs %s: %v", dir, err)
			}
		}
	})
}

// mkdirs creates each dir and returns them.
func mkdirs(t *testing.T, dirs ...string) []string {
	t.Helper()
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dirs
}

func randomData(seed uint64, n int) []byte {
	b := make([]byte, n+8)
	r := rand.New(rand.NewPCG(seed, 0))
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n]
}

func inoOf(t *testing.T, p string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// upperFiles lists every non-directory in dir (the upper).
func upperFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// bigOnSmallUpper mounts tg over a lower holding data as "big", with the
// upper and workdir on an 8 MiB tmpfs.
func bigOnSmallUpper(t *testing.T, tg target, data []byte) (lower, upper, work, mnt string) {
	t.Helper()
	base := t.TempDir()
	d := mkdirs(t, filepath.Join(base, "lower"), filepath.Join(base, "small"), filepath.Join(base, "mnt"))
	lower, small, mnt := d[0], d[1], d[2]
	if err := os.WriteFile(filepath.Join(lower, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, small, "size=8m")
	d = mkdirs(t, filepath.Join(small, "upper"), filepath.Join(small, "work"))
	upper, work = d[0], d[1]
	tg.mount(t, []string{lower}, upper, work, mnt)
	return lower, upper, work, mnt
}

// TestTruncateToZeroOfBigLowerFileCopiesNoData: truncate(path, 0) of a
// 12 MiB lower file with an 8 MiB upper works and keeps the inode number:
// the copy-up skips the data it is about to drop, as an O_TRUNC open does
// (internal/reliability TestTruncOpenOfBigLowerFileCopiesNoData). Kernel
// overlayfs copies the data first and runs out of space, which the test
// also checks, so the difference stays visible (docs/semantics.md).
func TestTruncateToZeroOfBigLowerFileCopiesNoData(t *testing.T) {
	fstest.RequireRoot(t)
	big := randomData(1, 12<<20)
	want := map[bool]string{false: "ok", true: "ENOSPC"}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			lower, upper, work, mnt := bigOnSmallUpper(t, tg, big)
			p := filepath.Join(mnt, "big")
			ino := inoOf(t, p)
			err := unix.Truncate(p, 0)
			if got := errName(err); got != want[tg.kernel] {
				t.Fatalf("truncate(big, 0) with 8 MiB of upper: %s, want %s", got, want[tg.kernel])
			}
			if err != nil {
				return
			}
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				t.Fatal(err)
			}
			if st.Size != 0 || st.Ino != ino {
				t.Errorf("after truncate: size %d inode %d, want 0 and %d (the lower's)", st.Size, st.Ino, ino)
			}
			if files := upperFiles(t, upper); strings.Join(files, ",") != "big" {
				t.Errorf("upper holds %q, want just big", files)
			}
			if left := fstest.WorkLeftovers(t, work); len(left) > 0 {
				t.Errorf("workdir holds %q", left)
			}
			if b, err := os.ReadFile(filepath.Join(lower, "big")); err != nil || !bytes.Equal(b, big) {
				t.Errorf("the lower file changed (%d bytes, %v)", len(b), err)
			}
		})
	}
}

// TestConcurrentOpenersShareOneCopyUp: processes that open one big lower
// file for writing at the same moment share a single copy-up (openers
// that come during it wait for it). The upper is a tmpfs with room for
// one copy of the file but not two, so a second copy-up running beside
// the first fails its opener with ENOSPC. Each writer writes its own
// marker at its own offset right after its open, and readers that open it
// read-write check every byte outside the markers: none may see a partial
// file or lose a marker. In the end the upper holds exactly one file, the
// workdir nothing, and the inode number is the lower's.
func TestConcurrentOpenersShareOneCopyUp(t *testing.T) {
	fstest.RequireRoot(t)
	if _, err := exec.LookPath("dd"); err != nil {
		testenv.Skipf(t, "needs dd (coreutils)")
	}
	const size, writers, readers = 5 << 20, 6, 4
	data := randomData(2, size)
	marker := func(i int) (int64, []byte) {
		return int64(i)*(size/writers) + 4093, []byte(fmt.Sprintf("<writer %d>", i))
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			_, upper, work, mnt := bigOnSmallUpper(t, tg, data)
			p := filepath.Join(mnt, "big")
			ino := inoOf(t, p)

			start := make(chan struct{})
			var wg sync.WaitGroup
			errs := make(chan error, writers+readers)
			for i := 0; i < writers; i++ {
				off, m := marker(i)
				cmd := exec.Command("dd", "of="+p, "bs="+strconv.Itoa(len(m)), "count=1",
					"seek="+strconv.FormatInt(off, 10), "oflag=seek_bytes", "conv=notrunc", "status=none")
				cmd.Stdin = bytes.NewReader(m)
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					if out, err := cmd.CombinedOutput(); err != nil {
						errs <- fmt.Errorf("%s: %v: %s", cmd, err, out)
					}
				}()
			}
			for i := 0; i < readers; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					f, err := os.OpenFile(p, os.O_RDWR, 0)
					if err != nil {
						errs <- err
						return
					}
					defer f.Close()
					got, err := io.ReadAll(f)
					if err != nil {
						errs <- err
						return
					}
					if len(got) != size {
						errs <- fmt.Errorf("a reader opening read-write saw %d bytes, want %d", len(got), size)
						return
					}
					for w := 0; w < writers; w++ {
						off, m := marker(w) // the marker or the lower bytes
						copy(got[off:], data[off:off+int64(len(m))])
					}
					if !bytes.Equal(got, data) {
						errs <- errors.New("a reader opening read-write saw other bytes than the lower's")
					}
				}()
			}
			close(start)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}

			want := bytes.Clone(data)
			for i := 0; i < writers; i++ {
				off, m := marker(i)
				copy(want[off:], m)
			}
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				lost := 0
				for i := 0; i < writers; i++ {
					off, m := marker(i)
					if !bytes.Equal(got[off:off+int64(len(m))], m) {
						lost++
					}
				}
				t.Errorf("the merged file differs from the lower plus the %d markers (%d markers lost, %d bytes)", writers, lost, len(got))
			}
			if files := upperFiles(t, upper); strings.Join(files, ",") != "big" {
				t.Errorf("upper holds %q, want just big", files)
			}
			if left := fstest.WorkLeftovers(t, work); len(left) > 0 {
				t.Errorf("workdir holds %q", left)
			}
			if now := inoOf(t, p); now != ino {
				t.Errorf("inode %d after the copy-up, was %d", now, ino)
			}
		})
	}
}

// TestReadOnlyMountRefusesChanges: a mount without an upper refuses every
// call that would change it with EROFS, as kernel overlayfs without an
// upperdir does, and still reads.
func TestReadOnlyMountRefusesChanges(t *testing.T) {
	fstest.RequireRoot(t)
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			lowers, _, _, mnt := layers(t, stack{bottom: []fstest.Applier{
				fstest.CreateFile("f", []byte("lower f\n"), 0o644),
				fstest.SetXattr("f", "user.x", []byte("1")),
				fstest.CreateDir("d", 0o755),
				fstest.CreateDir("e", 0o755),
				fstest.CreateFile("e/x", []byte("x\n"), 0o644),
				fstest.Symlink("f", "s"),
			}})
			tg.mount(t, lowers, "", "", mnt)
			at := func(p string) string { return filepath.Join(mnt, p) }
			open := func(p string, flags int) error {
				fd, err := unix.Open(at(p), flags|unix.O_CLOEXEC, 0o644)
				if err == nil {
					unix.Close(fd)
				}
				return err
			}
			ops := []struct {
				what string
				err  error
			}{
				{"create", open("new", unix.O_CREAT|unix.O_WRONLY)},
				{"open for writing", open("f", unix.O_WRONLY)},
				{"open read-write", open("f", unix.O_RDWR)},
				{"open with O_TRUNC", open("f", unix.O_RDONLY|unix.O_TRUNC)},
				{"O_TMPFILE", open("d", unix.O_TMPFILE|unix.O_WRONLY)},
				{"truncate", unix.Truncate(at("f"), 1)},
				{"mkdir", unix.Mkdir(at("newdir"), 0o755)},
				{"mknod fifo", unix.Mknod(at("fifo"), unix.S_IFIFO|0o644, 0)},
				{"symlink", unix.Symlink("f", at("newlink"))},
				{"link", unix.Link(at("f"), at("hard"))},
				{"unlink", unix.Unlink(at("f"))},
				{"unlink symlink", unix.Unlink(at("s"))},
				{"rmdir", unix.Rmdir(at("d"))},
				{"rename", unix.Rename(at("f"), at("g"))},
				{"rename over", unix.Rename(at("f"), at("e/x"))},
				{"chmod", unix.Chmod(at("f"), 0o600)},
				{"chown", unix.Chown(at("f"), 1, 1)},
				{"utimes", unix.UtimesNano(at("f"), []unix.Timespec{{Sec: 1}, {Sec: 1}})},
				{"setxattr", unix.Setxattr(at("f"), "user.y", []byte("2"), 0)},
				{"removexattr", unix.Removexattr(at("f"), "user.x")},
			}
			for _, op := range ops {
				if !errors.Is(op.err, unix.EROFS) {
					t.Errorf("%s: %s, want EROFS", op.what, errName(op.err))
				}
			}
			if b, err := os.ReadFile(at("f")); err != nil || string(b) != "lower f\n" {
				t.Errorf("read f: %q, %v", b, err)
			}
			if v, err := fstest.Xattrs(at("f")); err != nil || v["user.x"] != "1" {
				t.Errorf("xattrs of f: %v, %v", v, err)
			}
			if entries, err := os.ReadDir(mnt); err != nil || len(entries) != 4 {
				t.Errorf("root lists %d entries (%v), want d e f s", len(entries), err)
			}
		})
	}
}

// statfsOf is what statfs says about p, in the fields the mounts share.
func statfsOf(t *testing.T, p string) string {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("bsize %d blocks %d bfree %d bavail %d files %d ffree %d namelen %d",
		st.Bsize, st.Blocks, st.Bfree, st.Bavail, st.Files, st.Ffree, st.Namelen)
}

// TestStatfs: statfs of the mount reports the upper's filesystem (a tmpfs
// of known size here), before and after a write through the mount fills
// part of it, and the top lower's when there is no upper, as kernel
// overlayfs does.
func TestStatfs(t *testing.T) {
	fstest.RequireRoot(t)
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			base := t.TempDir()
			d := mkdirs(t, filepath.Join(base, "lower"), filepath.Join(base, "small"), filepath.Join(base, "mnt"), filepath.Join(base, "romnt"))
			lower, small, mnt, romnt := d[0], d[1], d[2], d[3]
			mountTmpfs(t, small, "size=8m,nr_inodes=1000")
			mountTmpfs(t, lower, "size=4m,nr_inodes=500")
			if err := os.WriteFile(filepath.Join(lower, "f"), []byte("lower\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			d = mkdirs(t, filepath.Join(small, "upper"), filepath.Join(small, "work"))
			upper, work := d[0], d[1]
			tg.mount(t, []string{lower}, upper, work, mnt)
			tg.mount(t, []string{lower}, "", "", romnt)

			check := func(what, mountPath, layer string) {
				t.Helper()
				got, want := statfsOf(t, mountPath), statfsOf(t, layer)
				if got != want {
					t.Errorf("statfs %s:\n got %s\nwant %s (the layer's)", what, got, want)
				}
			}
			check("of the mount", mnt, upper)
			check("of a file in the mount", filepath.Join(mnt, "f"), upper)
			if err := os.WriteFile(filepath.Join(mnt, "fill"), make([]byte, 3<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			check("after writing 3 MiB", mnt, upper)
			if got := statfsOf(t, mnt); !strings.Contains(got, "blocks 2048 ") || !strings.Contains(got, "files 1000 ") {
				t.Errorf("statfs of the mount: %s, want the 8 MiB, 1000-inode tmpfs", got)
			}
			check("of a read-only mount", romnt, lower)
		})
	}
}

// readSizes matches the size of each READ request in a --debug trace.
var readSizes = regexp.MustCompile(`READ n\d+ \{Fh \d+ \[\d+ \+(\d+)\)`)

// TestLargeReads reads a 3 MiB lower file with O_DIRECT in 1 MiB requests
// (more than spliceMin, which unionfs serves by splicing from the file)
// and with buffered reads, without passthrough so that the daemon serves
// them, and compares every byte. The --debug trace proves the large
// requests reached the daemon.
func TestLargeReads(t *testing.T) {
	fstest.RequireFUSE(t)
	data := randomData(3, 3<<20+12345)
	lowers, upper, work, mnt := layers(t, stack{bottom: []fstest.Applier{fstest.CreateFile("big", data, 0o644)}})
	u := fstest.MountUnion(t, lowers, upper, work, mnt, "--no-passthrough", "--debug")
	p := filepath.Join(mnt, "big")

	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	var got []byte
	for off := int64(0); ; {
		n, err := unix.Pread(fd, buf, off)
		if err != nil {
			t.Fatalf("O_DIRECT pread at %d: %v", off, err)
		}
		if n == 0 {
			break
		}
		got = append(got, buf[:n]...)
		off += int64(n)
	}
	unix.Close(fd)
	if !bytes.Equal(got, data) {
		t.Errorf("O_DIRECT reads: %d bytes, sha256 %x; want %d bytes, sha256 %x", len(got), sha256.Sum256(got), len(data), sha256.Sum256(data))
	}
	if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, data) {
		t.Errorf("buffered read: %d bytes, %v; want the lower's %d bytes", len(b), err, len(data))
	}

	largest := 0
	for _, m := range readSizes.FindAllStringSubmatch(u.Output(), -1) {
		if n, _ := strconv.Atoi(m[1]); n > largest {
			largest = n
		}
	}
	if largest <= 128<<10 {
		t.Errorf("the largest READ in the --debug trace asks for %d bytes; the test needs some over 128 KiB", largest)
	}
}
