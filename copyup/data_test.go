package copyup

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// checkSparseCopy checks dst has src's content, size and data segments,
// and no more blocks than src.
func checkSparseCopy(t testing.TB, src, dst string) {
	t.Helper()
	ss, ds := lstat(t, src), lstat(t, dst)
	if ss.Blocks*512 >= ss.Size {
		t.Fatalf("fixture %s is not sparse: %d blocks for %d bytes", src, ss.Blocks, ss.Size)
	}
	if ds.Size != ss.Size {
		t.Errorf("size %d, want %d", ds.Size, ss.Size)
	}
	if ds.Blocks > ss.Blocks {
		t.Errorf("copy has %d blocks, source %d: holes were filled", ds.Blocks, ss.Blocks)
	}
	if got, want := segments(t, dst), segments(t, src); !slices.Equal(got, want) {
		t.Errorf("data segments %v, want %v", got, want)
	}
	a, err := os.ReadFile(src)
	must(t, err)
	b, err := os.ReadFile(dst)
	must(t, err)
	if !bytes.Equal(a, b) {
		t.Errorf("content differs")
	}
}

// TestCopyFileDataMethods runs each data method on a dense file, a sparse
// one, one that is all hole and an empty one.
func TestCopyFileDataMethods(t *testing.T) {
	for _, m := range []dataMethod{methodClone, methodCopyRange, methodReadWrite} {
		t.Run(m.String(), func(t *testing.T) {
			l := newLayout(t)
			must(t, os.WriteFile(filepath.Join(l.lower, "dense"), randomBytes(3, 5<<20+7), 0o644))
			makeSparse(t, filepath.Join(l.lower, "sparse"))
			f, err := os.Create(filepath.Join(l.lower, "hole"))
			must(t, err)
			must(t, f.Truncate(10<<20))
			must(t, f.Close())
			must(t, os.WriteFile(filepath.Join(l.lower, "empty"), nil, 0o644))

			opts := keepOwner()
			opts.firstData = m
			for _, n := range []string{"dense", "sparse", "hole", "empty"} {
				must(t, l.copyUp(t, n, opts))
				a, _ := os.ReadFile(filepath.Join(l.lower, n))
				b, _ := os.ReadFile(filepath.Join(l.upper, n))
				if !bytes.Equal(a, b) {
					t.Errorf("%s: content differs", n)
				}
			}
			checkSparseCopy(t, filepath.Join(l.lower, "sparse"), filepath.Join(l.upper, "sparse"))
			if st := lstat(t, filepath.Join(l.upper, "hole")); st.Size != 10<<20 || st.Blocks != 0 {
				t.Errorf("all-hole copy: size %d blocks %d, want 10 MiB and 0", st.Size, st.Blocks)
			}
		})
	}
}

// TestCopyFileDataFallsBack: the method actually used on this filesystem
// pair is never earlier than the one asked for, and read/write stays
// read/write.
func TestCopyFileDataFallsBack(t *testing.T) {
	l := newLayout(t)
	must(t, os.WriteFile(filepath.Join(l.lower, "f"), randomBytes(4, 1<<20), 0o644))
	for _, first := range []dataMethod{methodClone, methodCopyRange, methodReadWrite} {
		src, err := openSource(l.lowerFd, "f")
		must(t, err)
		dst, err := unix.Open(filepath.Join(l.upper, first.String()[:4]), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
		must(t, err)
		used, err := copyFileData(dst, src, 1<<20, first)
		unix.Close(src)
		unix.Close(dst)
		must(t, err)
		if used < first {
			t.Errorf("asked for %s, used %s", first, used)
		}
		t.Logf("asked for %s, used %s", first, used)
	}
}

// TestCloneOnXFS checks the reflink path on a reflink-capable filesystem:
// FICLONE does the work and the copy is complete.
func TestCloneOnXFS(t *testing.T) {
	base := t.TempDir()
	mountXFS(t, base)
	l := newLayoutIn(t, base)
	src := filepath.Join(l.lower, "f")
	must(t, os.WriteFile(src, randomBytes(5, 3<<20+5), 0o644))
	makeSparse(t, filepath.Join(l.lower, "sparse"))

	sfd, err := openSource(l.lowerFd, "f")
	must(t, err)
	defer unix.Close(sfd)
	dfd, err := unix.Open(filepath.Join(l.work, "direct"), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	must(t, err)
	defer unix.Close(dfd)
	used, err := copyFileData(dfd, sfd, 3<<20+5, methodClone)
	must(t, err)
	if used != methodClone {
		t.Errorf("used %s on xfs, want clone", used)
	}
	must(t, os.Remove(filepath.Join(l.work, "direct")))

	for _, n := range []string{"f", "sparse"} {
		p := filepath.Join(l.lower, n)
		srcSt, srcX := lstat(t, p), xattrsOf(t, p)
		must(t, l.copyUp(t, n, keepOwner()))
		checkCopy(t, p, srcSt, srcX, filepath.Join(l.upper, n), keepOwner())
	}
	if got, want := segments(t, filepath.Join(l.upper, "sparse")), segments(t, filepath.Join(l.lower, "sparse")); !slices.Equal(got, want) {
		t.Errorf("cloned sparse file: segments %v, want %v", got, want)
	}
	l.requireWorkEmpty(t)
}

// BenchmarkEntry copies up a 64 MiB file: with fsync (the default), without
// (volatile), and forced through each data method.
func BenchmarkEntry(b *testing.B) {
	const size = 64 << 20
	cases := []struct {
		name string
		opts Options
	}{
		{"fsync", Options{UID: -1, GID: -1}},
		{"nofsync", Options{UID: -1, GID: -1, NoFsync: true}},
		{"nofsync-copy_file_range", Options{UID: -1, GID: -1, NoFsync: true, firstData: methodCopyRange}},
		{"nofsync-read_write", Options{UID: -1, GID: -1, NoFsync: true, firstData: methodReadWrite}},
	}
	l := newLayout(b)
	must(b, os.WriteFile(filepath.Join(l.lower, "big"), randomBytes(6, size), 0o644))
	src := l.source(b, "big")
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				if err := Entry(src, l.upperFd, "big", l.workFd, c.opts); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				must(b, os.Remove(filepath.Join(l.upper, "big")))
				b.StartTimer()
			}
		})
	}
}
