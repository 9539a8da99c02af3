package posix

import (
	"fmt"
	"strings"
	"testing"

	"github.com/unionmount/unionmount/internal/fstest"
	"golang.org/x/sys/unix"
)

// TestDescriptorOfMovedEntry works through descriptors whose entry was
// renamed, replaced by a rename, or unlinked after the open: fstat,
// fchmod, fchown, ftruncate, fsetxattr and getdents, on files and
// directories that live in the lower (copied up by the open or the
// change) and in the upper. The kernel serves them from the inode the
// descriptor holds; the daemon must reach the same file, so every result
// is compared with kernel overlayfs.
func TestDescriptorOfMovedEntry(t *testing.T) {
	fstest.RequireRoot(t)
	fstest.RequireOverlay(t)
	fstest.RequireFUSE(t)
	bottom := []fstest.Applier{
		fstest.CreateFile("lf", []byte("lower file\n"), 0o644),
		fstest.CreateFile("lother", []byte("lower other\n"), 0o644),
		fstest.CreateDir("ld", 0o755),
		fstest.CreateFile("ld/x", []byte("x"), 0o644),
		fstest.CreateDir("lempty", 0o750),
	}
	upperFiles := []fstest.Applier{
		fstest.CreateFile("uf", []byte("upper file\n"), 0o644),
		fstest.CreateFile("uother", []byte("upper other\n"), 0o644),
		fstest.CreateDir("ud", 0o755),
		fstest.CreateFile("ud/y", []byte("y"), 0o644),
		fstest.CreateDir("uempty", 0o700),
		fstest.CreateDir("usrc", 0o711),
		fstest.CreateFile("usrc/z", []byte("z"), 0o644),
	}
	cases := []struct {
		name   string
		open   string
		dir    bool
		change func(mnt string) error
		// differ: steps where the results differ on purpose
		// (docs/semantics.md), as "step: kernel's -> ours".
		differ []string
	}{
		{"lower file renamed", "lf", false, func(m string) error { return unix.Rename(m+"/lf", m+"/lf2") }, nil},
		{"upper file renamed", "uf", false, func(m string) error { return unix.Rename(m+"/uf", m+"/uf2") }, nil},
		{"lower file replaced", "lf", false, func(m string) error { return unix.Rename(m+"/lother", m+"/lf") }, nil},
		{"upper file replaced", "uf", false, func(m string) error { return unix.Rename(m+"/uother", m+"/uf") }, nil},
		{"lower file unlinked", "lf", false, func(m string) error { return unix.Unlink(m + "/lf") }, nil},
		{"upper file unlinked", "uf", false, func(m string) error { return unix.Unlink(m + "/uf") }, nil},
		{"upper dir renamed", "ud", true, func(m string) error { return unix.Rename(m+"/ud", m+"/ud2") }, nil},
		{"upper dir replaced", "uempty", true, func(m string) error { return unix.Rename(m+"/usrc", m+"/uempty") }, nil},
		{"lower dir replaced", "lempty", true, func(m string) error { return unix.Rename(m+"/usrc", m+"/lempty") }, lowerDirGone("ENOTEMPTY")},
		{"upper dir removed", "uempty", true, func(m string) error { return unix.Rmdir(m + "/uempty") }, nil},
		{"lower dir removed", "lempty", true, func(m string) error { return unix.Rmdir(m + "/lempty") }, lowerDirGone("ENOTDIR")},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "-"), func(t *testing.T) {
			got := map[bool][]string{}
			for _, tg := range targets {
				lowers, upper, work, mnt := layers(t, stack{bottom: bottom, upper: upperFiles})
				tg.mount(t, lowers, upper, work, mnt)
				got[tg.kernel] = descriptorSteps(mnt, c.open, c.dir, c.change)
			}
			k, u := got[true], got[false]
			if len(k) != len(u) {
				t.Fatalf("unionmount: %q\nkernel: %q", u, k)
			}
			differ := map[string]bool{}
			for _, d := range c.differ {
				differ[d] = true
			}
			for i := range k {
				step, kr, _ := strings.Cut(k[i], ": ")
				_, ur, _ := strings.Cut(u[i], ": ")
				if kr != ur && differ[step+": "+kr+" -> "+ur] {
					t.Logf("%s: %s (kernel: %s, a known difference)", step, ur, kr)
					delete(differ, step+": "+kr+" -> "+ur)
				} else if k[i] != u[i] {
					t.Errorf("unionmount: %s\n      kernel: %s", u[i], k[i])
				} else {
					t.Log(u[i])
				}
			}
			for d := range differ {
				t.Errorf("known difference %q not seen: fixed? update the test and docs/semantics.md", d)
			}
			if !strings.HasSuffix(k[0], ": ok") {
				t.Errorf("kernel overlayfs could not set the case up: %s", k[0])
			}
		})
	}
}

// lowerDirGone is the known difference for a directory copied up through
// a descriptor after its lower name was removed or replaced: the
// kernel's copy-up meets what holds the name now and fails with kerr; the
// daemon finds no name to copy it up to and fails with ENOENT. Neither
// changes anything.
func lowerDirGone(kerr string) []string {
	var out []string
	for _, step := range []string{"fchmod 0604", "fchown 1234:5678", "fsetxattr"} {
		out = append(out, step+": error "+kerr+" -> error ENOENT")
	}
	return out
}

// descriptorSteps opens name below mnt, applies change, then works
// through the descriptor; one line per step.
func descriptorSteps(mnt, name string, dir bool, change func(string) error) []string {
	var out []string
	res := func(what, s string, err error) {
		if err != nil {
			s = "error " + errName(err)
		}
		out = append(out, what+": "+s)
	}
	flags := unix.O_RDWR
	if dir {
		flags = unix.O_RDONLY | unix.O_DIRECTORY
	}
	fd, err := unix.Open(mnt+"/"+name, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		res("open", "", err)
		return out
	}
	defer unix.Close(fd)
	var before unix.Stat_t
	unix.Fstat(fd, &before)
	res("open and change", "ok", change(mnt))
	fstat := func() (string, error) {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return "", err
		}
		return fmt.Sprintf("mode %o nlink %d size %d uid %d gid %d same ino %v", st.Mode, st.Nlink, sizeOf(&st), st.Uid, st.Gid, st.Ino == before.Ino), nil
	}
	s, err := fstat()
	res("fstat", s, err)
	res("fchmod 0604", "ok", unix.Fchmod(fd, 0o604))
	s, err = fstat()
	res("fstat", s, err)
	res("fchown 1234:5678", "ok", unix.Fchown(fd, 1234, 5678))
	s, err = fstat()
	res("fstat", s, err)
	if !dir {
		res("ftruncate 3", "ok", unix.Ftruncate(fd, 3))
		s, err = fstat()
		res("fstat", s, err)
		buf := make([]byte, 16)
		n, err := unix.Pread(fd, buf, 0)
		res("pread", fmt.Sprintf("%q", buf[:max(n, 0)]), err)
	}
	res("fsetxattr", "ok", unix.Fsetxattr(fd, "user.fd", []byte("v"), 0))
	buf := make([]byte, 16)
	n, err := unix.Fgetxattr(fd, "user.fd", buf)
	res("fgetxattr", string(buf[:max(n, 0)]), err)
	if dir {
		names, err := readNames(fd)
		res("getdents", strings.Join(names, " "), err)
	}
	return out
}

// sizeOf is a file's size; a directory's depends on the filesystem below.
func sizeOf(st *unix.Stat_t) int64 {
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return -1
	}
	return st.Size
}
