package copyup

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCleanWorkdir removes leftover temps, whole trees included, keeps
// everything else, and never follows a symlink out of the workdir.
func TestCleanWorkdir(t *testing.T) {
	l := newLayout(t)
	outside := t.TempDir()
	outsideMode := lstat(t, outside).Mode
	must(t, os.WriteFile(filepath.Join(outside, "precious"), []byte("keep"), 0o644))

	tree := filepath.Join(l.work, TempPrefix+"tree")
	must(t, os.MkdirAll(filepath.Join(tree, "a/b/c"), 0o755))
	must(t, os.WriteFile(filepath.Join(tree, "a/b/c/file"), []byte("x"), 0o644))
	must(t, os.Symlink(outside, filepath.Join(tree, "a/link-to-outside")))
	must(t, unix.Mkfifo(filepath.Join(tree, "a/fifo"), 0o600))
	must(t, os.Mkdir(filepath.Join(tree, "ro"), 0o755))
	must(t, os.WriteFile(filepath.Join(tree, "ro/file"), nil, 0o444))
	must(t, os.Mkdir(filepath.Join(tree, "ro/locked"), 0o000))
	must(t, os.Chmod(filepath.Join(tree, "ro"), 0o555))
	must(t, os.WriteFile(filepath.Join(l.work, TempPrefix+"file"), []byte("partial"), 0o600))
	must(t, os.Symlink(outside, filepath.Join(l.work, TempPrefix+"link")))
	must(t, unix.Mkfifo(filepath.Join(l.work, TempPrefix+"fifo"), 0o600))
	must(t, os.Mkdir(filepath.Join(l.work, "not-ours"), 0o755))
	must(t, os.WriteFile(filepath.Join(l.work, "#other-prefix"), nil, 0o644))

	must(t, CleanWorkdir(l.workFd))
	if got, want := dirNames(t, l.work), []string{"#other-prefix", "not-ours"}; !slices.Equal(got, want) {
		t.Errorf("workdir holds %q, want %q", got, want)
	}
	if b, err := os.ReadFile(filepath.Join(outside, "precious")); err != nil || string(b) != "keep" {
		t.Errorf("followed a symlink out of the workdir: %q, %v", b, err)
	}
	if st := lstat(t, outside); st.Mode != outsideMode {
		t.Errorf("changed the mode of a symlink's target: %#o", st.Mode)
	}
	// Idempotent on a clean workdir.
	must(t, CleanWorkdir(l.workFd))
}
