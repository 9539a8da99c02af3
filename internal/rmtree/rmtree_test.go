package rmtree

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/testenv"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func openDir(t *testing.T, p string) int {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	must(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// makeTree builds, in base, a tree "d" with what a user can leave in a
// workdir: nested directories, a fifo, symlinks to a file and a directory
// outside, a 0555 directory and a 0000 one, both with files inside.
func makeTree(t *testing.T, base, outside string) {
	t.Helper()
	d := filepath.Join(base, "d")
	must(t, os.MkdirAll(filepath.Join(d, "a/b/c"), 0o755))
	must(t, os.WriteFile(filepath.Join(d, "a/b/c/file"), []byte("x"), 0o644))
	must(t, unix.Mkfifo(filepath.Join(d, "a/fifo"), 0o600))
	must(t, os.Symlink(outside, filepath.Join(d, "a/to-dir")))
	must(t, os.Symlink(filepath.Join(outside, "precious"), filepath.Join(d, "to-file")))
	must(t, os.Mkdir(filepath.Join(d, "ro"), 0o755))
	must(t, os.WriteFile(filepath.Join(d, "ro/file"), nil, 0o444))
	must(t, os.Mkdir(filepath.Join(d, "ro/locked"), 0o755))
	must(t, os.WriteFile(filepath.Join(d, "ro/locked/file"), nil, 0o644))
	must(t, os.Chmod(filepath.Join(d, "ro/locked"), 0o000))
	must(t, os.Chmod(filepath.Join(d, "ro"), 0o555))
}

// checkRemoved checks that base/d is gone and outside is untouched.
func checkRemoved(t *testing.T, base, outside string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(base, "d")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("d still there: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(outside, "precious")); err != nil || string(b) != "keep" {
		t.Errorf("followed a symlink out of the tree: %q, %v", b, err)
	}
	if fi, err := os.Stat(outside); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("changed a symlink's target: %v, %v", fi.Mode(), err)
	}
}

func newOutside(t *testing.T, dir string) string {
	t.Helper()
	outside := filepath.Join(dir, "outside")
	must(t, os.Mkdir(outside, 0o755))
	must(t, os.Chmod(outside, 0o755))
	must(t, os.WriteFile(filepath.Join(outside, "precious"), []byte("keep"), 0o644))
	return outside
}

func TestRemoveAt(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base")
	must(t, os.Mkdir(base, 0o755))
	outside := newOutside(t, dir)
	makeTree(t, base, outside)
	fd := openDir(t, base)
	must(t, RemoveAt(fd, "d"))
	checkRemoved(t, base, outside)

	// What is gone is not an error; a file and a symlink go as they are.
	must(t, RemoveAt(fd, "d"))
	must(t, os.WriteFile(filepath.Join(base, "f"), nil, 0o644))
	must(t, os.Symlink(outside, filepath.Join(base, "l")))
	must(t, RemoveAt(fd, "f"))
	must(t, RemoveAt(fd, "l"))
	if ents, err := os.ReadDir(base); err != nil || len(ents) != 0 {
		t.Errorf("base holds %v, %v", ents, err)
	}
	checkRemoved(t, base, outside)
}

// TestRemoveAtUnprivileged: a user's 0555 and 0000 directories go without
// the privilege to override permissions, as a rootless daemon has it. As
// root, the test runs itself again as nobody.
func TestRemoveAtUnprivileged(t *testing.T) {
	if dir := os.Getenv("RMTREE_TEST_DIR"); dir != "" {
		base := filepath.Join(dir, "base")
		makeTree(t, base, filepath.Join(dir, "outside"))
		must(t, RemoveAt(openDir(t, base), "d"))
		checkRemoved(t, base, filepath.Join(dir, "outside"))
		return
	}
	dir, err := os.MkdirTemp("", "rmtree-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Mkdir(filepath.Join(dir, "base"), 0o755))
	newOutside(t, dir)
	if os.Getuid() != 0 {
		t.Setenv("RMTREE_TEST_DIR", dir)
		TestRemoveAtUnprivileged(t)
		return
	}
	const nobody = 65534
	for _, p := range []string{dir, filepath.Join(dir, "base"), filepath.Join(dir, "outside"), filepath.Join(dir, "outside/precious")} {
		must(t, os.Chown(p, nobody, nobody))
	}
	// The test binary, where nobody can run it.
	bin := filepath.Join(dir, "rmtree.test")
	b, err := os.ReadFile(os.Args[0])
	must(t, err)
	must(t, os.WriteFile(bin, b, 0o755))
	cmd := exec.Command(bin, "-test.run=^TestRemoveAtUnprivileged$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "RMTREE_TEST_DIR="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "PASS") {
		t.Fatalf("as nobody, no PASS:\n%s", out)
	}
}

// fsImmutableFL is FS_IMMUTABLE_FL of linux/fs.h, which x/sys/unix lacks.
const fsImmutableFL = 0x10

// TestRemoveAtGoesOn: an entry that cannot go does not keep its siblings;
// the error names it. An immutable file (root only) is such an entry.
func TestRemoveAtGoesOn(t *testing.T) {
	base := t.TempDir()
	d := filepath.Join(base, "d")
	must(t, os.Mkdir(d, 0o755))
	for _, n := range []string{"a", "stuck", "z"} {
		must(t, os.WriteFile(filepath.Join(d, n), nil, 0o644))
	}
	f, err := os.Open(filepath.Join(d, "stuck"))
	must(t, err)
	t.Cleanup(func() { f.Close() })
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, fsImmutableFL); err != nil {
		testenv.Skipf(t, "cannot make a file immutable here (needs root and a filesystem with the flag): %v", err)
	}
	t.Cleanup(func() { unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, 0) })

	err = RemoveAt(openDir(t, base), "d")
	if !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), `"stuck"`) {
		t.Errorf("RemoveAt = %v; want EPERM naming \"stuck\"", err)
	}
	ents, _ := os.ReadDir(d)
	if len(ents) != 1 || ents[0].Name() != "stuck" {
		t.Errorf("d holds %v; want only stuck", ents)
	}
}
