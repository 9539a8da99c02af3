package rules

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/unionmount/unionmount/copyup"
	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/whiteout"
	"golang.org/x/sys/unix"
)

// The tests build a lower and an upper layer from fixtures, apply one
// rule to the upper through this package, and compare the upper they get
// with what they declare; then they run the same operation through a
// kernel overlayfs mount (userxattr, the rootless dialect this package
// writes in the tests) over a twin of the layers and compare the kernel's
// upper with the same declaration. The rules need no privilege (see
// TestUnprivileged); the kernel half needs root and fails under CI=true
// when it cannot run.

// unprivEnv marks a run of the test binary as an unprivileged user, made by
// TestUnprivileged: the kernel half is the parent's.
const unprivEnv = "UNIONMOUNT_RULES_UNPRIVILEGED"

// stack is one side of a case: the layers and this package's view of the
// upper.
type stack struct {
	lower, upper, work string
	lowerFd, upperFd   int
	up                 *Upper
}

func newStack(t *testing.T, lower, upper []fstest.Applier) *stack {
	t.Helper()
	base := t.TempDir()
	s := &stack{lower: filepath.Join(base, "lower"), upper: filepath.Join(base, "upper"), work: filepath.Join(base, "work")}
	for _, d := range []string{s.lower, s.upper, s.work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := fstest.Apply(s.lower, lower...); err != nil {
		t.Fatal(err)
	}
	if err := fstest.Apply(s.upper, upper...); err != nil {
		t.Fatal(err)
	}
	return s
}

// open opens the layers for the rules: the upper O_PATH, as unionfs
// holds its directories, the workdir for reading.
func (s *stack) open(t *testing.T) {
	t.Helper()
	var err error
	if s.lowerFd, err = unix.Open(s.lower, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s.lowerFd) })
	if s.upperFd, err = unix.Open(s.upper, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s.upperFd) })
	work, err := unix.Open(s.work, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(work) })
	s.up = &Upper{Work: work, Format: whiteout.Format{Rootless: true}, Logf: t.Logf}
}

// copyUp copies the lower entry name up beside it, as unionfs does before
// a rule moves a lower entry (the kernel does it inside rename).
func (s *stack) copyUp(name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(s.lowerFd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	return copyup.Entry(copyup.Source{DirFd: s.lowerFd, Name: name, Stat: st}, s.upperFd, name, s.up.Work, copyup.Options{UID: -1, GID: -1, NoFsync: true})
}

// render lists a layer as sorted lines, one per entry below root: "NAME/
// MODE" for a directory (with " opaque" when a marker of any dialect but
// the AUFS file inside says so), "NAME MODE =CONTENT nlink=N" for a
// file, "NAME -> TARGET", "NAME whiteout" for char 0/0, "NAME fifo MODE";
// a directory or file ends with its xattrs (" user.k=v") but the overlay
// and unionmount markers and security.selinux (fstest.DefaultXattrFilter).
// Times, owners and the kernel's bookkeeping xattrs (origin, impure) are
// left out: the two sides run at different times, and the rules never
// write those.
func render(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		perm := st.Mode & 07777
		var line string
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			line = fmt.Sprintf("%s/ %04o", rel, perm)
			if whiteout.DirOpacityPath(p) == whiteout.Opaque {
				line += " opaque"
			}
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line = fmt.Sprintf("%s %04o =%s nlink=%d", rel, perm, b, st.Nlink)
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line = rel + " -> " + target
		case unix.S_IFCHR:
			if whiteout.IsCharWhiteout(&st) {
				line = rel + " whiteout"
			} else {
				line = fmt.Sprintf("%s char %d", rel, st.Rdev)
			}
		case unix.S_IFIFO:
			line = fmt.Sprintf("%s fifo %04o", rel, perm)
		default:
			line = fmt.Sprintf("%s mode %o", rel, st.Mode)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR || st.Mode&unix.S_IFMT == unix.S_IFREG {
			x, err := fstest.Xattrs(p)
			if err != nil {
				return err
			}
			var names []string
			for k := range x {
				if fstest.DefaultXattrFilter(k) {
					names = append(names, k)
				}
			}
			sort.Strings(names)
			for _, k := range names {
				line += " " + k + "=" + x[k]
			}
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatalf("render %s: %v", root, err)
	}
	sort.Strings(out)
	return out
}

func sameLines(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n")
}

// ruleCase is one operation, as the rules do it and as a process does it
// on a kernel overlayfs mount.
type ruleCase struct {
	name         string
	lower, upper []fstest.Applier
	// rules applies the operation to s.upper through this package,
	// after the checks (CheckName, CheckRemove, CheckRename) unionfs
	// makes; it returns their error, if any.
	rules func(s *stack) error
	// kernel does the operation on a kernel overlay mount at mnt; nil
	// when the kernel has no counterpart (the AUFS dialect).
	kernel func(mnt string) error
	// wantErr is the errno both sides give (0: success).
	wantErr unix.Errno
	// want is the upper afterwards (render).
	want []string
}

func errnoOf(err error) unix.Errno {
	var e unix.Errno
	if err == nil {
		return 0
	}
	if errors.As(err, &e) {
		return e
	}
	return unix.EIO
}

func runCases(t *testing.T, cases []ruleCase) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newStack(t, c.lower, c.upper)
			s.open(t)
			if got := errnoOf(c.rules(s)); got != c.wantErr {
				t.Errorf("rules: error %v, want %v", got, c.wantErr)
			}
			if got := render(t, s.upper); !sameLines(got, c.want) {
				t.Errorf("rules: upper is\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(c.want, "\n\t"))
			}
			if left := render(t, s.work); len(left) > 0 {
				t.Errorf("rules: workdir holds %q", left)
			}
			if c.kernel == nil {
				return
			}
			t.Run("kernel", func(t *testing.T) {
				requireKernel(t)
				k := newStack(t, c.lower, c.upper)
				mnt := t.TempDir()
				m := fstest.MountKernelOverlay(t, []string{k.lower}, k.upper, k.work, mnt, "userxattr")
				kerr := c.kernel(mnt)
				if err := m.Unmount(); err != nil {
					t.Fatal(err)
				}
				if got := errnoOf(kerr); got != c.wantErr {
					t.Errorf("kernel: error %v (%v), want %v", got, kerr, c.wantErr)
				}
				if got := render(t, k.upper); !sameLines(got, c.want) {
					t.Errorf("kernel: upper is\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(c.want, "\n\t"))
				}
			})
		})
	}
}

// requireKernel skips (fails under CI=true) unless kernel overlayfs can
// be mounted. In the unprivileged run the parent compares with the kernel.
func requireKernel(t *testing.T) {
	t.Helper()
	if os.Getenv(unprivEnv) != "" {
		t.Skip("unprivileged run: the kernel comparison is the parent's")
	}
	if os.Getenv("CI") == "true" {
		if os.Geteuid() != 0 {
			t.Fatalf("CI compares the rules with kernel overlayfs: run the tests as root (euid is %d)", os.Geteuid())
		}
		if b, err := os.ReadFile("/proc/filesystems"); err != nil || !strings.Contains(string(b), "\toverlay\n") {
			t.Fatal("CI compares the rules with kernel overlayfs: modprobe overlay")
		}
	}
	fstest.RequireOverlay(t)
}

// Fixture shorthands.
var (
	dir  = func(p string) fstest.Applier { return fstest.CreateDir(p, 0o755) }
	file = func(p, content string) fstest.Applier { return fstest.CreateFile(p, []byte(content), 0o644) }
	wh   = fstest.Whiteout
	opq  = fstest.UserOpaque
)
