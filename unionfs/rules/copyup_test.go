package rules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/unionmount/unionmount/copyup"
	"github.com/unionmount/unionmount/internal/fstest"
	"golang.org/x/sys/unix"
)

// copyUpPath copies the lower entry path up the way unionfs does: each
// directory the upper lacks first, from the top down, then the entry,
// each step into the upper copy of its parent.
func copyUpPath(s *stack, path string) error {
	lower, upper := s.lowerFd, s.upperFd
	names := strings.Split(path, "/")
	for i, name := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(lower, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		opts := copyup.Options{UID: -1, GID: -1, NoFsync: true}
		if err := s.up.CopyUp(copyup.Source{DirFd: lower, Name: name, Stat: st}, upper, opts); err != nil {
			return err
		}
		if i == len(names)-1 {
			break
		}
		nl, err := unix.Openat(lower, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		nu, err := unix.Openat(upper, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			unix.Close(nl)
			return err
		}
		if i > 0 {
			unix.Close(lower)
			unix.Close(upper)
		}
		lower, upper = nl, nu
	}
	if len(names) > 1 {
		unix.Close(lower)
		unix.Close(upper)
	}
	return nil
}

// TestCopyUp copies entries up parents first and compares the upper with
// the one kernel overlayfs leaves when a process opens the same entry for
// writing: the same directories with the same modes and xattrs, the file
// with its data, nothing else.
func TestCopyUp(t *testing.T) {
	lower := []fstest.Applier{
		fstest.CreateDir("a", 0o750), fstest.SetXattr("a", "user.k", []byte("a")),
		fstest.CreateDir("a/b", 0o700),
		fstest.CreateFile("a/b/c", []byte("data"), 0o640), fstest.SetXattr("a/b/c", "user.k", []byte("c")),
		file("a/b/sibling", "not copied"),
		fstest.CreateDir("a/b/d", 0o711),
	}
	openForWrite := func(path string) func(string) error {
		return func(mnt string) error {
			f, err := os.OpenFile(filepath.Join(mnt, path), os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			return f.Close()
		}
	}
	chmod := func(path string, mode os.FileMode) func(string) error {
		return func(mnt string) error { return os.Chmod(filepath.Join(mnt, path), mode) }
	}
	runCases(t, []ruleCase{{
		name:   "a file three levels down",
		lower:  lower,
		rules:  func(s *stack) error { return copyUpPath(s, "a/b/c") },
		kernel: openForWrite("a/b/c"),
		want:   []string{"a/ 0750 user.k=a", "a/b/ 0700", "a/b/c 0640 =data nlink=1 user.k=c"},
	}, {
		// A directory comes up empty: its entries stay below until
		// they are copied up in turn.
		name:   "a directory",
		lower:  lower,
		rules:  func(s *stack) error { return copyUpPath(s, "a/b/d") },
		kernel: chmod("a/b/d", 0o711),
		want:   []string{"a/ 0750 user.k=a", "a/b/ 0700", "a/b/d/ 0711"},
	}, {
		name:   "parents already up",
		lower:  lower,
		upper:  []fstest.Applier{fstest.CreateDir("a", 0o750), fstest.SetXattr("a", "user.k", []byte("a")), fstest.CreateDir("a/b", 0o700)},
		rules:  func(s *stack) error { return copyUpPath(s, "a/b/c") },
		kernel: openForWrite("a/b/c"),
		want:   []string{"a/ 0750 user.k=a", "a/b/ 0700", "a/b/c 0640 =data nlink=1 user.k=c"},
	}})
}

// TestCopyUpOverGoneName: a copy-up whose target name an unlink or rename
// took while it copied (a whiteout, or an entry of another type, now holds
// it) fails with ENOENT instead of taking that entry as the copy; one
// that finds its own earlier copy takes it. Needs no privilege: the
// whiteout here is made where mknod is allowed, else skipped with why.
func TestCopyUpOverGoneName(t *testing.T) {
	root := t.TempDir()
	open := func(name string) int {
		t.Helper()
		p := filepath.Join(root, name)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}
	lower, upper, work := open("lower"), open("upper"), open("work")
	u := &Upper{Work: work}
	for _, name := range []string{"wo", "dir", "same"} {
		if err := os.WriteFile(filepath.Join(root, "lower", name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(root, "upper", "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "upper", "same"), []byte("same"), 0o644); err != nil {
		t.Fatal(err)
	}
	haveWhiteout := unix.Mknodat(upper, "wo", unix.S_IFCHR, 0) == nil
	for _, c := range []struct {
		name string
		want error
	}{{"wo", unix.ENOENT}, {"dir", unix.ENOENT}, {"same", nil}} {
		if c.name == "wo" && !haveWhiteout {
			continue // mknod of 0/0 refused here (no privilege): the type check covers the rest
		}
		var st unix.Stat_t
		if err := unix.Fstatat(lower, c.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
		err := u.CopyUp(copyup.Source{DirFd: lower, Name: c.name, Stat: st}, upper, copyup.Options{UID: -1, GID: -1, NoFsync: true})
		if err != c.want {
			t.Errorf("copy-up of %s over what the upper holds: %v, want %v", c.name, err, c.want)
		}
	}
}
