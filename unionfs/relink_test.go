package unionfs

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestStaleLookupDoesNotRelink replays, step by step, a lookup that
// resolves a name just before an unlink or a rename takes it (the kernel
// revalidates a cached name with a LOOKUP sent without the directory's
// lock, so the two run side by side): the lookup must not put the name
// back on the node, or the node's next open reaches the whiteout the
// unlink left (ENXIO) or the file renamed over it. A lookup that finds a
// name still there after an unrelated rename, and one that ran with no
// rename at all, do record the name (another name of a hard link).
func TestStaleLookupDoesNotRelink(t *testing.T) {
	root := t.TempDir()
	lower, upper, work := filepath.Join(root, "lower"), filepath.Join(root, "upper"), filepath.Join(root, "work")
	for _, d := range []string{lower, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(lower, "low"), filepath.Join(upper, "up"), filepath.Join(upper, "other")} {
		if err := os.WriteFile(f, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(upper, "up"), filepath.Join(upper, "up2")); err != nil {
		t.Fatal(err)
	}
	u, err := newUnion(Options{Lowers: []string{lower}, Upper: upper, Workdir: work, SquashUID: -1, SquashGID: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.close)
	upperFd := u.rootFds[0].fd

	// lookup resolves name in the root and returns the node for it, as a
	// LOOKUP does before childInode relinks, plus the pd it went through.
	lookup := func(name string) (*node, *dirAt, resolution) {
		t.Helper()
		pd := u.at(u.root)
		t.Cleanup(pd.done)
		res, found, err := u.resolve(pd, name)
		if err != nil || !found {
			t.Fatalf("resolve %s: found %v, %v", name, found, err)
		}
		n := u.newNode(res.top, res.dirs)
		if res.upper(u) {
			n.upperIno.Store(res.st.Ino)
		}
		return n, pd, res
	}
	// changed runs f as Rename and remove run theirs: under linkMu, one
	// more link generation.
	changed := func(f func() error) {
		t.Helper()
		u.linkMu.Lock()
		defer u.linkMu.Unlock()
		u.linkGen.Add(1)
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	linked := func(n *node, name string) bool {
		u.linkMu.RLock()
		defer u.linkMu.RUnlock()
		return n.hasLinkLocked(u.root, name)
	}

	// A lower file unlinked between the lookup's resolve and its relink:
	// the upper now holds a whiteout under that name.
	n, pd, res := lookup("low")
	changed(func() error { return u.format.MakeWhiteout(upperFd, "low") })
	if n.relink(pd, "low", &res) || linked(n, "low") {
		t.Error("a lookup that raced the unlink of a lower file relinked the whiteout's name")
	}

	// An upper file renamed over between resolve and relink: the name now
	// stands for another file.
	n, pd, res = lookup("up")
	changed(func() error { return unix.Renameat(upperFd, "other", upperFd, "up") })
	if n.relink(pd, "up", &res) || linked(n, "up") {
		t.Error("a lookup that raced a rename over its name relinked the name of another file")
	}

	// Another name of a hard link, with an unrelated rename in between:
	// still that file, so recorded.
	n, pd, res = lookup("up2")
	n.parent, n.name = u.root, "elsewhere"
	changed(func() error { return os.WriteFile(filepath.Join(upper, "unrelated"), nil, 0o644) })
	if !n.relink(pd, "up2", &res) || !linked(n, "up2") || !linked(n, "elsewhere") {
		t.Error("a hard link's other name, still there after an unrelated rename, was not recorded")
	}

	// No rename or remove since the lookup: recorded as found.
	n, pd, res = lookup("up2")
	if !n.relink(pd, "up2", &res) || !linked(n, "up2") {
		t.Error("a lookup with no rename since did not record the name")
	}
}
