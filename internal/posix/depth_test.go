package posix

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/unionmount/unionmount/internal/fstest"
	"golang.org/x/sys/unix"
)

// TestDepthBeyondPathMax works three times PATH_MAX below a directory of
// the lower layer, as a user who cd's down a level at a time and works
// there: every call is relative to the current directory, so no path is
// longer than one name. At the bottom it runs create, write, truncate,
// stat, link, rename, symlink, readlink, chmod, xattrs, mkfifo, utimes,
// readdir, mkdir, rmdir and unlink, then removes the whole chain. Kernel
// overlayfs reaches any depth; the daemon must too, so every result is
// compared with the kernel's.
func TestDepthBeyondPathMax(t *testing.T) {
	fstest.RequireRoot(t)
	fstest.RequireOverlay(t)
	fstest.RequireFUSE(t)
	got := map[bool][]string{}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			lowers, upper, work, mnt := layers(t, stack{bottom: []fstest.Applier{
				fstest.CreateDir("ldir", 0o755),
				fstest.CreateFile("ldir/keep", []byte("lower\n"), 0o644),
			}})
			tg.mount(t, lowers, upper, work, mnt)
			got[tg.kernel] = depthSteps(t, mnt+"/ldir")
		})
	}
	k, u := got[true], got[false]
	if len(k) == 0 || len(u) == 0 {
		t.Fatalf("a target did not run: kernel %d results, unionmount %d", len(k), len(u))
	}
	for i := 0; i < max(len(k), len(u)); i++ {
		var kr, ur string
		if i < len(k) {
			kr = k[i]
		}
		if i < len(u) {
			ur = u[i]
		}
		if kr != ur {
			t.Errorf("unionmount: %s\n      kernel: %s", ur, kr)
		} else {
			t.Log(ur)
		}
		if strings.Contains(kr, ": error ") && !strings.Contains(kr, "(gone)") {
			t.Errorf("kernel overlayfs failed a step that must work: %s", kr)
		}
	}
}

// depthLevels directories of 255 bytes each reach 3 x PATH_MAX.
const depthLevels = 3*unix.PathMax/256 + 1

// depthSteps builds the chain under top (a directory of the mount), runs
// the operations at its bottom, removes the chain, and returns one line
// per step: what it did and what came of it.
func depthSteps(t *testing.T, top string) []string {
	cwd, err := os.Open(".")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unix.Fchdir(int(cwd.Fd())); err != nil {
			t.Errorf("back to the test's directory: %v", err)
		}
		cwd.Close()
	}()
	if err := unix.Chdir(top); err != nil {
		t.Fatal(err)
	}
	var out []string
	res := func(what string, s string, err error) {
		if err != nil {
			s = "error " + errName(err)
		}
		out = append(out, what+": "+s)
	}
	names := make([]string, depthLevels)
	for i := range names {
		names[i] = nameOf('d', 255, strconv.Itoa(i))
	}
	depth := 0
	for _, n := range names {
		if err := unix.Mkdir(n, 0o755); err != nil {
			res("mkdir level "+strconv.Itoa(depth+1), "", err)
			break
		}
		if err := unix.Chdir(n); err != nil {
			res("chdir level "+strconv.Itoa(depth+1), "", err)
			break
		}
		depth++
	}
	res("levels made", fmt.Sprintf("%d of %d, %d bytes below %s", depth, len(names), depth*256, "ldir"), nil)
	if depth < len(names) {
		return out
	}

	stat := func(name string) (string, error) {
		var st unix.Stat_t
		if err := unix.Lstat(name, &st); err != nil {
			return "", err
		}
		return fmt.Sprintf("mode %o nlink %d size %d", st.Mode, st.Nlink, st.Size), nil
	}
	inoOf := func(name string) uint64 {
		var st unix.Stat_t
		if unix.Lstat(name, &st) != nil {
			return 0
		}
		return st.Ino
	}
	fd, err := unix.Open("f", unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	res("create f", "ok", err)
	if err == nil {
		n, err := unix.Write(fd, []byte("hello, deep world\n"))
		res("write f", strconv.Itoa(n), err)
		res("close f", "ok", unix.Close(fd))
	}
	s, err := stat("f")
	res("stat f", s, err)
	res("truncate f 5", "ok", unix.Truncate("f", 5))
	s, err = stat("f")
	res("stat f", s, err)
	b, err := os.ReadFile("f")
	res("read f", strconv.Quote(string(b)), err)
	res("link f g", "ok", unix.Link("f", "g"))
	s, err = stat("g")
	res("stat g", s, err)
	res("f and g one inode", strconv.FormatBool(inoOf("f") != 0 && inoOf("f") == inoOf("g")), nil)
	res("rename g h", "ok", unix.Rename("g", "h"))
	s, err = stat("h")
	res("stat h", s, err)
	_, err = stat("g")
	res("stat g after rename (gone)", "ok", err)
	res("symlink f s", "ok", unix.Symlink("f", "s"))
	buf := make([]byte, 64)
	n, err := unix.Readlink("s", buf)
	res("readlink s", string(buf[:max(n, 0)]), err)
	res("chmod f 0600", "ok", unix.Chmod("f", 0o600))
	s, err = stat("f")
	res("stat f", s, err)
	res("setxattr f", "ok", unix.Lsetxattr("f", "user.deep", []byte("v1"), 0))
	n, err = unix.Lgetxattr("f", "user.deep", buf)
	res("getxattr f", string(buf[:max(n, 0)]), err)
	n, err = unix.Llistxattr("f", buf)
	res("listxattr f", userXattrs(buf[:max(n, 0)]), err)
	res("removexattr f", "ok", unix.Lremovexattr("f", "user.deep"))
	_, err = unix.Lgetxattr("f", "user.deep", buf)
	res("getxattr f after remove (gone)", "ok", err)
	res("mkfifo p", "ok", unix.Mkfifo("p", 0o640))
	s, err = stat("p")
	res("stat p", s, err)
	ts := []unix.Timespec{{Sec: 1_000_000_000, Nsec: 5}, {Sec: 1_100_000_000, Nsec: 7}}
	res("utimes f", "ok", unix.UtimesNanoAt(unix.AT_FDCWD, "f", ts, unix.AT_SYMLINK_NOFOLLOW))
	var st unix.Stat_t
	err = unix.Lstat("f", &st)
	res("times of f", fmt.Sprintf("atime %d.%d mtime %d.%d", st.Atim.Sec, st.Atim.Nsec, st.Mtim.Sec, st.Mtim.Nsec), err)
	res("mkdir sub", "ok", unix.Mkdir("sub", 0o700))
	s, err = stat("sub")
	res("stat sub", s, err)
	ls, err := listCwd()
	res("readdir", ls, err)
	res("rmdir sub", "ok", unix.Rmdir("sub"))
	for _, name := range []string{"f", "h", "s", "p"} {
		res("unlink "+name, "ok", unix.Unlink(name))
	}
	ls, err = listCwd()
	res("readdir after unlink", ls, err)
	for i := len(names) - 1; i >= 0; i-- {
		if err := unix.Chdir(".."); err != nil {
			res("chdir .. from level "+strconv.Itoa(i+1), "", err)
			return out
		}
		if err := unix.Rmdir(names[i]); err != nil {
			res("rmdir level "+strconv.Itoa(i+1), "", err)
			return out
		}
	}
	res("chain removed", "ok", nil)
	ls, err = listCwd()
	res("readdir ldir", ls, err)
	return out
}

// listCwd lists the current directory through getdents, sorted.
func listCwd() (string, error) {
	fd, err := unix.Open(".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	names, err := readNames(fd)
	if err != nil {
		return "", err
	}
	return strings.Join(names, " "), nil
}

// readNames reads the names of an open directory, sorted, without "."
// and "..".
func readNames(fd int) ([]string, error) {
	var names []string
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
	sort.Strings(names)
	return names, nil
}

// userXattrs is the user.* names of a listxattr buffer, sorted.
func userXattrs(b []byte) string {
	var out []string
	for _, x := range strings.Split(string(b), "\x00") {
		if strings.HasPrefix(x, "user.") {
			out = append(out, x)
		}
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}
