package unionfs

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDirFdsBounded walks a chain of directories deeper than PATH_MAX in
// the upper with room for four directory descriptors: the daemon never
// holds more, a name at the bottom still resolves after every descriptor
// of the chain was dropped (each is reopened from its parent's), and after
// a directory in the middle is renamed (on disk and its link, as Rename
// does) the bottom is reached through the new name.
func TestDirFdsBounded(t *testing.T) {
	root := t.TempDir()
	lower, upper, work := filepath.Join(root, "lower"), filepath.Join(root, "upper"), filepath.Join(root, "work")
	for _, d := range []string{lower, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const levels = 20 // 20 names of 255 bytes: 5,120 bytes, past PATH_MAX
	name := func(i int) string { return strings.Repeat("d", 250) + strconv.Itoa(10000+i) }
	fd, err := unix.Open(upper, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < levels; i++ {
		if err := unix.Mkdirat(fd, name(i), 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, name(i), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = next
	}
	if err := unix.Mknodat(fd, "bottom", unix.S_IFREG|0o644, 0); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)

	const max = 4
	u, err := newUnion(Options{Lowers: []string{lower}, Upper: upper, Workdir: work, MaxDirFds: max, SquashUID: -1, SquashGID: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.close)
	chain := []*node{u.root}
	for i := 0; i < levels; i++ {
		pd := u.at(chain[i])
		res, found, err := u.resolve(pd, name(i))
		pd.done()
		if err != nil || !found {
			t.Fatalf("level %d: found %v, %v", i+1, found, err)
		}
		n := u.newNode(res.top, res.dirs)
		n.parent, n.name = chain[i], name(i)
		chain = append(chain, n)
		if held := u.fds.held(); held > max {
			t.Fatalf("level %d: %d directory descriptors held, bound %d", i+1, held, max)
		}
	}
	bottom := func(what string) {
		t.Helper()
		pd := u.at(chain[levels])
		defer pd.done()
		res, found, err := u.resolve(pd, "bottom")
		if err != nil || !found || res.st.Mode&unix.S_IFMT != unix.S_IFREG {
			t.Fatalf("%s: bottom found %v, mode %o, %v", what, found, res.st.Mode, err)
		}
	}
	bottom("after the walk")

	// A pinned descriptor (a directory whose name is gone) outlives any
	// number of others and does not count against the bound.
	pinnedNode := chain[3]
	pe, err := u.dirFd(pinnedNode, 0)
	if err != nil {
		t.Fatal(err)
	}
	u.fds.pin(pe)
	u.fds.release(pe)
	for _, n := range chain[4:] {
		e, err := u.dirFd(n, 0)
		if err != nil {
			t.Fatal(err)
		}
		u.fds.release(e)
	}
	if e := u.fds.get(fdKey{pinnedNode, 0}); e != pe {
		t.Fatal("the pinned descriptor was evicted")
	} else {
		u.fds.release(e)
	}
	if held := u.fds.held(); held > max+1 {
		t.Fatalf("%d descriptors held with one pinned, bound %d", held, max)
	}
	for _, n := range chain[1:] {
		u.fds.drop(n, len(u.layers))
	}
	if held := u.fds.held(); held != 0 {
		t.Fatalf("%d descriptors held after dropping all", held)
	}
	bottom("every descriptor reopened")

	// Rename level 10 as Rename does: on disk and its link, together.
	mid := chain[10]
	pfd, err := u.dirFd(chain[9], 0)
	if err != nil {
		t.Fatal(err)
	}
	u.linkMu.Lock()
	err = unix.Renameat(pfd.fd, name(9), pfd.fd, "moved")
	if err == nil {
		mid.moveLinkLocked(chain[9], name(9), chain[9], "moved")
	}
	u.linkMu.Unlock()
	u.fds.release(pfd)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range chain[1:] {
		u.fds.drop(n, len(u.layers))
	}
	bottom("reopened through the renamed directory")
	u.linkMu.RLock()
	p := chain[levels].pathLocked()
	u.linkMu.RUnlock()
	if want := strings.Count(p, "/") + 1; want != levels || !strings.Contains(p, "/moved/") {
		t.Errorf("path of the bottom directory: %d names, has /moved/: %v", want, strings.Contains(p, "/moved/"))
	}
}
