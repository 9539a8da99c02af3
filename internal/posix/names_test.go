package posix

// Names and paths, through the mount and through kernel
// overlayfs over identical layers: NAME_MAX is the daemon's to enforce (the
// kernel's FUSE client lets names up to 1024 bytes through), and a path
// that is long below the mount works although the same path inside a layer
// is longer than PATH_MAX, which only *at() calls on directory fds reach.

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// target is a mount the names tests run on: unionmount, or kernel
// overlayfs as the reference.
type target struct {
	name   string
	kernel bool
}

var targets = []target{{"unionmount", false}, {"kernel", true}}

func (tg target) mount(t *testing.T, lowers []string, upper, work, mnt string) {
	t.Helper()
	if tg.kernel {
		fstest.MountKernelOverlay(t, lowers, upper, work, mnt)
	} else {
		fstest.MountUnion(t, lowers, upper, work, mnt)
	}
}

// errName is "ok" for nil, else the errno's name (ENAMETOOLONG).
func errName(err error) string {
	if err == nil {
		return "ok"
	}
	var e unix.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return strings.ToUpper(n)
		}
	}
	return err.Error()
}

// nameOf returns a name of n bytes: c repeated, ending in tag.
func nameOf(c byte, n int, tag string) string {
	return strings.Repeat(string(c), n-len(tag)) + tag
}

// short shows a long name as its first byte and its length.
func short(name string) string {
	if len(name) <= 16 {
		return name
	}
	return fmt.Sprintf("%c*%d", name[0], len(name))
}

// TestNameMax: a name of 256 or 1024 bytes gets ENAMETOOLONG from lookup,
// create, mkdir, mknod, symlink, link and rename (as the new name and as
// the old one), in the root and in a merged directory, and leaves nothing
// in the upper; names of 255 bytes work for each. pjdfstest's NAME_MAX
// cases, which both FUSE peers failed before.
func TestNameMax(t *testing.T) {
	fstest.RequireRoot(t)
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			lowers, upper, work, mnt := layers(t, stack{bottom: []fstest.Applier{
				fstest.CreateFile("f", []byte("lower f\n"), 0o644),
				fstest.CreateDir("d", 0o755),
				fstest.CreateFile("d/x", []byte("lower x\n"), 0o644),
				fstest.CreateDir("e", 0o755),
			}})
			tg.mount(t, lowers, upper, work, mnt)
			at := func(p string) string { return filepath.Join(mnt, p) }
			for _, n := range []int{256, 1024} {
				for _, dir := range []string{"", "d"} {
					long := filepath.Join(dir, nameOf('n', n, ""))
					ops := []struct {
						what string
						err  error
					}{
						{"lookup", unix.Lstat(at(long), new(unix.Stat_t))},
						{"create", func() error {
							fd, err := unix.Open(at(long), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
							if err == nil {
								unix.Close(fd)
							}
							return err
						}()},
						{"mkdir", unix.Mkdir(at(long), 0o755)},
						{"mknod fifo", unix.Mknod(at(long), unix.S_IFIFO|0o644, 0)},
						{"symlink", unix.Symlink("f", at(long))},
						{"link lower file", unix.Link(at("f"), at(long))},
						{"rename lower file to it", unix.Rename(at("f"), at(long))},
						{"rename lower dir to it", unix.Rename(at("e"), at(long))},
						{"rename from it", unix.Rename(at(long), at("g"))},
						{"getxattr", func() error { _, err := unix.Lgetxattr(at(long), "user.x", nil); return err }()},
					}
					for _, op := range ops {
						if !errors.Is(op.err, unix.ENAMETOOLONG) {
							t.Errorf("%s of a %d-byte name in %q: %s, want ENAMETOOLONG", op.what, n, "/"+dir, errName(op.err))
						}
					}
				}
			}
			if b, err := os.ReadFile(at("f")); err != nil || string(b) != "lower f\n" {
				t.Errorf("f after the refused calls: %q, %v", b, err)
			}
			if left, _ := os.ReadDir(upper); len(left) > 0 {
				t.Errorf("the refused calls left %d entries in the upper (%s...)", len(left), short(left[0].Name()))
			}

			// 255 bytes is allowed, for each kind of new name.
			name := func(tag string) string { return at(nameOf('m', 255, tag)) }
			for _, op := range []struct {
				what string
				err  error
			}{
				{"create", os.WriteFile(name("create"), []byte("new\n"), 0o644)},
				{"mkdir", unix.Mkdir(name("mkdir"), 0o755)},
				{"mknod fifo", unix.Mknod(name("fifo"), unix.S_IFIFO|0o644, 0)},
				{"symlink", unix.Symlink("f", name("symlink"))},
				{"link", unix.Link(at("f"), name("link"))},
				{"rename", unix.Rename(at("d/x"), name("rename"))},
				{"mkdir in merged dir", unix.Mkdir(at("d/"+nameOf('m', 255, "sub")), 0o755)},
			} {
				if op.err != nil {
					t.Errorf("%s of a 255-byte name: %v", op.what, op.err)
				}
			}
			var got []string
			entries, err := os.ReadDir(mnt)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				got = append(got, e.Name())
			}
			want := []string{"d", "e", "f"}
			for _, tag := range []string{"create", "fifo", "link", "mkdir", "rename", "symlink"} {
				want = append(want, nameOf('m', 255, tag))
			}
			sort.Strings(got)
			sort.Strings(want)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("root lists %d names, want %d (the six 255-byte names, d, e and f)", len(got), len(want))
			}
		})
	}
}

// longPathSegments is how many 255-byte directories deep the test tree
// goes: 15 of them make 3840 bytes, so a 255-byte name in the deepest one
// is exactly PATH_MAX-1 bytes below the mount.
const longPathSegments = 15

func segments() []string {
	s := make([]string, longPathSegments)
	for i := range s {
		s[i] = nameOf('r', 255, strconv.Itoa(i))
	}
	return s
}

// mkdirChain creates names below dirfd one by one (keeping what exists)
// and returns an O_PATH fd of the last; paths longer than PATH_MAX are
// only reachable this way.
func mkdirChain(t *testing.T, dirfd int, names ...string) int {
	t.Helper()
	fd, err := unix.Dup(dirfd)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := unix.Mkdirat(fd, n, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			t.Fatalf("mkdir %s: %v", short(n), err)
		}
		next, err := unix.Openat(fd, n, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatalf("open %s: %v", short(n), err)
		}
		fd = next
	}
	return fd
}

func openPath(t *testing.T, p string) int {
	t.Helper()
	fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// writeAt creates name below dirfd with data and xattrs (name=value).
func writeAt(t *testing.T, dirfd int, name string, data []byte, xattrs ...string) {
	t.Helper()
	fd, err := unix.Openat(dirfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatalf("create %s: %v", short(name), err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, data); err != nil {
		t.Fatal(err)
	}
	for _, kv := range xattrs {
		k, v, _ := strings.Cut(kv, "=")
		if err := unix.Fsetxattr(fd, k, []byte(v), 0); err != nil {
			t.Fatalf("setxattr %s on %s: %v", k, short(name), err)
		}
	}
}

// setDirXattr sets an xattr on the directory name below dirfd.
func setDirXattr(t *testing.T, dirfd int, name, key, value string) {
	t.Helper()
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Fsetxattr(fd, key, []byte(value), 0); err != nil {
		t.Fatalf("setxattr %s on %s: %v", key, short(name), err)
	}
}

// bigData is the content of the 1 MiB lower file copied up deep down.
func bigData() []byte {
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(i*7 + i>>9)
	}
	return b
}

// Names in the deepest directory R of the long-path test. R is 3839 bytes
// below the layer root, which is itself more than 256 bytes deep, so every
// path inside R is longer than PATH_MAX from the layer's own root.
var (
	deepName     = nameOf('x', 254, "") // a lower file PATH_MAX-2 bytes below the mount
	opaqueName   = nameOf('o', 250, "") // an opaque dir in the top lower, 4090 bytes deep
	whiteoutName = nameOf('w', 254, "") // an xattr whiteout in the top lower
)

// fillLongLayers writes the two lowers of the long-path test below their
// roots. Bottom: R/{file,big,mode,sub/s,deep,opaque/h,whiteout}; top:
// R/top, R/opaque (opaque, with v), R/whiteout as an xattr whiteout (which
// marks R opaque=x).
func fillLongLayers(t *testing.T, top, bottom string) {
	t.Helper()
	segs := segments()
	bfd := openPath(t, bottom)
	defer unix.Close(bfd)
	b := mkdirChain(t, bfd, segs...)
	defer unix.Close(b)
	writeAt(t, b, "file", []byte("bottom file\n"), "user.b=1")
	writeAt(t, b, "big", bigData())
	writeAt(t, b, "mode", []byte("chmod me\n"))
	writeAt(t, b, deepName, []byte("deep lower\n"), "user.deep=1")
	writeAt(t, b, whiteoutName, []byte("whited out\n"))
	sub := mkdirChain(t, b, "sub")
	writeAt(t, sub, "s", []byte("s\n"))
	unix.Close(sub)
	op := mkdirChain(t, b, opaqueName)
	writeAt(t, op, "h", []byte("hidden\n"))
	unix.Close(op)

	tfd := openPath(t, top)
	defer unix.Close(tfd)
	a := mkdirChain(t, tfd, segs...)
	defer unix.Close(a)
	writeAt(t, a, "top", []byte("top file\n"))
	op = mkdirChain(t, a, opaqueName)
	writeAt(t, op, "v", []byte("visible\n"))
	unix.Close(op)
	setDirXattr(t, a, opaqueName, fstest.TrustedOpaqueXattr, "y")
	writeAt(t, a, whiteoutName, nil, fstest.TrustedWhiteoutXattr+"=")
	// The parent of an xattr whiteout is marked opaque=x (has whiteouts).
	setDirXattr(t, a, ".", fstest.TrustedOpaqueXattr, "x")
}

// TestLongPathBelowMount puts the layers 1792 bytes deep and works 3840 to
// 4095 bytes below the mount, so that each path inside a layer is longer
// than PATH_MAX while the path through the mount is not (pjdfstest's
// PATH_MAX cases): stat, open, read, readdir, xattrs of lower files (a
// whiteout xattr and an opaque dir among them), setxattr and chmod that
// copy a deep lower file up with its parents, an append that copies 1 MiB
// up, create, rename, unlink, mkdir, rmdir, symlink and link. Absolute
// paths through the mount are used where they fit, *at calls on a
// directory fd of the mount where they do not. Every step must give the
// same result on kernel overlayfs, which the expected values pin.
func TestLongPathBelowMount(t *testing.T) {
	fstest.RequireRoot(t)
	segs := segments()
	rel := strings.Join(segs, "/")
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			base := t.TempDir()
			mnt := filepath.Join(base, "mnt")
			if err := os.Mkdir(mnt, 0o755); err != nil {
				t.Fatal(err)
			}
			if len(mnt)+1+len(rel)+len("/file") >= unix.PathMax {
				testenv.Skipf(t, "temp dir %s is too long for paths just under PATH_MAX through it: set a shorter TMPDIR", mnt)
			}
			// The layers live 7 directories of 256 bytes below base.
			deepSegs := make([]string, 7)
			for i := range deepSegs {
				deepSegs[i] = nameOf('b', 255, strconv.Itoa(i))
			}
			bfd := openPath(t, base)
			dfd := mkdirChain(t, bfd, deepSegs...)
			unix.Close(bfd)
			for _, d := range []string{"top", "bottom", "upper", "work"} {
				if err := unix.Mkdirat(dfd, d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			unix.Close(dfd)
			deep := filepath.Join(append([]string{base}, deepSegs...)...)
			top, bottom, upper, work := filepath.Join(deep, "top"), filepath.Join(deep, "bottom"), filepath.Join(deep, "upper"), filepath.Join(deep, "work")
			if len(top)+1+len(rel) < unix.PathMax {
				t.Fatalf("layer path %d bytes: not deep enough to pass PATH_MAX", len(top))
			}
			fillLongLayers(t, top, bottom)
			if tg.kernel {
				// Three such paths pass the page mount(2) takes, and
				// fsconfig takes strings of at most 256 bytes: name the
				// layers by fd.
				var byFd []string
				for _, d := range []string{top, bottom, upper, work} {
					fd := openPath(t, d)
					defer unix.Close(fd)
					byFd = append(byFd, "/proc/self/fd/"+strconv.Itoa(fd))
				}
				top, bottom, upper, work = byFd[0], byFd[1], byFd[2], byFd[3]
			}
			tg.mount(t, []string{top, bottom}, upper, work, mnt)

			P := filepath.Join(mnt, rel) // R by absolute path, < PATH_MAX
			mfd := openPath(t, mnt)
			defer unix.Close(mfd)
			R := mkdirChain(t, mfd, segs...) // R by fd, for names that do not fit
			defer unix.Close(R)

			for _, s := range longPathSteps(P, R, upper, segs) {
				got, err := s.run()
				if err != nil {
					got = "error " + errName(err)
				}
				if got != s.want {
					t.Errorf("%s: got %q, want %q", s.what, got, s.want)
				}
			}
		})
	}
}

type step struct {
	what string
	want string
	run  func() (string, error)
}

// longPathSteps are the operations of TestLongPathBelowMount, in order; P
// is the deepest directory by absolute path through the mount, R an O_PATH
// fd of it in the mount.
func longPathSteps(P string, R int, upper string, segs []string) []step {
	big := bigData()
	var inoBefore uint64
	openAt := func(name string, flags int) (int, error) {
		return unix.Openat(R, name, flags|unix.O_CLOEXEC, 0o644)
	}
	xattrsOf := func(fd int) (string, error) {
		buf := make([]byte, 4096)
		n, err := unix.Flistxattr(fd, buf)
		if err != nil {
			return "", err
		}
		var names []string
		for _, x := range strings.Split(string(buf[:n]), "\x00") {
			if strings.HasPrefix(x, "user.") {
				v := make([]byte, 256)
				m, err := unix.Fgetxattr(fd, x, v)
				if err != nil {
					return "", fmt.Errorf("getxattr %s: %w", x, err)
				}
				names = append(names, x+"="+string(v[:m]))
			}
		}
		sort.Strings(names)
		return strings.Join(names, " "), nil
	}
	withFile := func(name string, flags int, f func(fd int) (string, error)) (string, error) {
		fd, err := openAt(name, flags)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		return f(fd)
	}
	statAt := func(name string) (string, error) {
		var st unix.Stat_t
		if err := unix.Fstatat(R, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return "", err
		}
		return fmt.Sprintf("mode %o size %d nlink %d", st.Mode, st.Size, st.Nlink), nil
	}
	list := func(dirfd int, name string) (string, error) {
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", err
		}
		f := os.NewFile(uintptr(fd), "dir")
		defer f.Close()
		names, err := f.Readdirnames(-1)
		if err != nil {
			return "", err
		}
		for i, n := range names {
			names[i] = short(n)
		}
		sort.Strings(names)
		return strings.Join(names, " "), nil
	}
	sum := func(b []byte) string { return fmt.Sprintf("%d bytes %x", len(b), sha256.Sum256(b)) }
	renamed := nameOf('m', 255, "")
	created := nameOf('n', 255, "")
	return []step{
		{"stat lower file by path", "mode 100644 size 12", func() (string, error) {
			fi, err := os.Lstat(filepath.Join(P, "file"))
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("mode %o size %d", unix.S_IFREG|uint32(fi.Mode().Perm()), fi.Size()), nil
		}},
		{"read lower file by path", "bottom file\n", func() (string, error) {
			b, err := os.ReadFile(filepath.Join(P, "file"))
			return string(b), err
		}},
		{"readdir by path (the whiteout hides its name)", "big file mode o*250 sub top x*254", func() (string, error) {
			return list(unix.AT_FDCWD, P)
		}},
		{"readdir of the merged subdir", "s", func() (string, error) { return list(R, "sub") }},
		{"getxattr of lower file by path", "1", func() (string, error) {
			v := make([]byte, 16)
			n, err := unix.Getxattr(filepath.Join(P, "file"), "user.b", v)
			return string(v[:max(n, 0)]), err
		}},
		{"stat of the lower file 4094 bytes down", "mode 100644 size 11 nlink 1", func() (string, error) { return statAt(deepName) }},
		{"read and list xattrs of it", "deep lower\n user.deep=1", func() (string, error) {
			return withFile(deepName, unix.O_RDONLY, func(fd int) (string, error) {
				var st unix.Stat_t
				if err := unix.Fstat(fd, &st); err != nil {
					return "", err
				}
				inoBefore = st.Ino
				b := make([]byte, 64)
				n, err := unix.Read(fd, b)
				if err != nil {
					return "", err
				}
				x, err := xattrsOf(fd)
				return string(b[:n]) + " " + x, err
			})
		}},
		{"setxattr copies it up, same inode", "user.deep=1 user.new=2 same inode", func() (string, error) {
			return withFile(deepName, unix.O_RDONLY, func(fd int) (string, error) {
				if err := unix.Fsetxattr(fd, "user.new", []byte("2"), 0); err != nil {
					return "", err
				}
				x, err := xattrsOf(fd)
				if err != nil {
					return "", err
				}
				var st unix.Stat_t
				if err := unix.Fstatat(R, deepName, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					return "", err
				}
				if st.Ino != inoBefore {
					return x + fmt.Sprintf(" inode %d, was %d", st.Ino, inoBefore), nil
				}
				return x + " same inode", nil
			})
		}},
		{"the upper holds the copy, with its parents", "deep lower\n", func() (string, error) {
			ufd, err := unix.Open(upper, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return "", err
			}
			defer unix.Close(ufd)
			dir := ufd
			for _, s := range segs {
				next, err := unix.Openat(dir, s, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				if dir != ufd {
					unix.Close(dir)
				}
				if err != nil {
					return "", err
				}
				dir = next
			}
			defer unix.Close(dir)
			fd, err := unix.Openat(dir, deepName, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return "", err
			}
			defer unix.Close(fd)
			b := make([]byte, 64)
			n, err := unix.Read(fd, b)
			return string(b[:max(n, 0)]), err
		}},
		{"the opaque dir 4090 bytes down hides the bottom's entries", "v", func() (string, error) { return list(R, opaqueName) }},
		{"lookup below the opaque dir", "error ENOENT", func() (string, error) { return statAt(opaqueName + "/h") }},
		{"lookup of the xattr whiteout", "error ENOENT", func() (string, error) { return statAt(whiteoutName) }},
		{"chmod of a lower file by path", "mode 100600 size 9 nlink 1", func() (string, error) {
			if err := os.Chmod(filepath.Join(P, "mode"), 0o600); err != nil {
				return "", err
			}
			return statAt("mode")
		}},
		{"append copies 1 MiB up", sum(append(bytes.Clone(big), "tail"...)), func() (string, error) {
			f, err := os.OpenFile(filepath.Join(P, "big"), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return "", err
			}
			if _, err := f.WriteString("tail"); err != nil {
				f.Close()
				return "", err
			}
			if err := f.Close(); err != nil {
				return "", err
			}
			b, err := os.ReadFile(filepath.Join(P, "big"))
			return sum(b), err
		}},
		{"create by path, setxattr, getxattr, listxattr", "new\n user.c=3", func() (string, error) {
			p := filepath.Join(P, "new")
			if err := os.WriteFile(p, []byte("new\n"), 0o644); err != nil {
				return "", err
			}
			if err := unix.Setxattr(p, "user.c", []byte("3"), 0); err != nil {
				return "", err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return "", err
			}
			return withFile("new", unix.O_RDONLY, func(fd int) (string, error) {
				x, err := xattrsOf(fd)
				return string(b) + " " + x, err
			})
		}},
		{"rename and unlink by path", "error ENOENT", func() (string, error) {
			if err := os.Rename(filepath.Join(P, "new"), filepath.Join(P, "new2")); err != nil {
				return "", err
			}
			if err := os.Remove(filepath.Join(P, "new2")); err != nil {
				return "", err
			}
			return statAt("new2")
		}},
		{"create 4095 bytes down", "mode 100644 size 5 nlink 1 user.d=4", func() (string, error) {
			return withFile(created, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR, func(fd int) (string, error) {
				if _, err := unix.Write(fd, []byte("made\n")); err != nil {
					return "", err
				}
				if err := unix.Fsetxattr(fd, "user.d", []byte("4"), 0); err != nil {
					return "", err
				}
				st, err := statAt(created)
				if err != nil {
					return "", err
				}
				x, err := xattrsOf(fd)
				return st + " " + x, err
			})
		}},
		{"rename 4095 bytes down", "error ENOENT / mode 100644 size 5 nlink 1", func() (string, error) {
			if err := unix.Renameat(R, created, R, renamed); err != nil {
				return "", err
			}
			_, oldErr := statAt(created)
			st, err := statAt(renamed)
			return "error " + errName(oldErr) + " / " + st, err
		}},
		{"unlink 4095 bytes down", "error ENOENT", func() (string, error) {
			if err := unix.Unlinkat(R, renamed, 0); err != nil {
				return "", err
			}
			return statAt(renamed)
		}},
		{"mkdir and rmdir 4095 bytes down", "mode 40755 size 0 nlink 2 / error ENOENT", func() (string, error) {
			if err := unix.Mkdirat(R, created, 0o755); err != nil {
				return "", err
			}
			st, err := statAt(created)
			if err != nil {
				return "", err
			}
			st = strings.Replace(st, fmt.Sprintf("size %d", sizeOfDir(R, created)), "size 0", 1)
			if err := unix.Unlinkat(R, created, unix.AT_REMOVEDIR); err != nil {
				return "", err
			}
			_, err = statAt(created)
			return st + " / error " + errName(err), nil
		}},
		{"symlink and readlink 4095 bytes down", "top", func() (string, error) {
			if err := unix.Symlinkat("top", R, created); err != nil {
				return "", err
			}
			b := make([]byte, 64)
			n, err := unix.Readlinkat(R, created, b)
			return string(b[:max(n, 0)]), err
		}},
		{"link of a lower file 4095 bytes down", "mode 100644 size 9 nlink 2 / mode 100644 size 9 nlink 2", func() (string, error) {
			if err := unix.Linkat(R, "top", R, renamed, 0); err != nil {
				return "", err
			}
			a, err := statAt("top")
			if err != nil {
				return "", err
			}
			b, err := statAt(renamed)
			return a + " / " + b, err
		}},
	}
}

// sizeOfDir is the st_size of the directory name below dirfd (which
// depends on the filesystem), or -1.
func sizeOfDir(dirfd int, name string) int64 {
	var st unix.Stat_t
	if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return -1
	}
	return st.Size
}
