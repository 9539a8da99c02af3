package unionfs

import (
	"strconv"

	"golang.org/x/sys/unix"
)

// link is one name of a node: its parent directory node and its name
// there.
type link struct {
	parent *node
	name   string
}

// dirFdLocked returns n's directory in layer with a reference: the held
// descriptor, or one reopened from its parent's (each step one openat of
// one component). Release it with u.fds.release.
//
// Preconditions: u.linkMu held (for reading at least); n has an entry in
// layer.
func (u *unionFS) dirFdLocked(n *node, layer int) (*fdEntry, error) {
	if n == u.root {
		return u.rootFds[layer], nil
	}
	if e := u.fds.get(fdKey{n, layer}); e != nil {
		return e, nil
	}
	if n.parent == nil {
		// Its name is gone and nothing was held for it.
		return nil, unix.ENOENT
	}
	pe, err := u.dirFdLocked(n.parent, layer)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Openat(pe.fd, n.name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	u.fds.release(pe)
	if err != nil {
		if err == unix.ELOOP {
			err = unix.ENOTDIR
		}
		return nil, err
	}
	return u.fds.add(fdKey{n, layer}, fd), nil
}

// dirFd is dirFdLocked for a caller that does not hold u.linkMu.
func (u *unionFS) dirFd(n *node, layer int) (*fdEntry, error) {
	if n == u.root {
		return u.rootFds[layer], nil
	}
	if e := u.fds.get(fdKey{n, layer}); e != nil {
		return e, nil
	}
	u.linkMu.RLock()
	defer u.linkMu.RUnlock()
	return u.dirFdLocked(n, layer)
}

// loc is an entry of one layer as the *at calls take it: a directory
// descriptor and a name in it ("." for the directory itself).
type loc struct {
	e    *fdEntry
	name string
}

func (l loc) dir() int { return l.e.fd }

// path names the entry for the calls that only take a path (the xattr
// calls): through the descriptor's /proc link, never by the layer's path.
// The l* variants do not follow a final symlink.
func (l loc) path() string {
	return "/proc/self/fd/" + strconv.Itoa(l.e.fd) + "/" + l.name
}

// locLocked returns where n's entry in layer is. Release it with
// u.fds.release(l.e).
//
// Preconditions: u.linkMu held (for reading at least).
func (u *unionFS) locLocked(n *node, layer int) (loc, error) {
	if n == u.root {
		return loc{e: u.rootFds[layer], name: "."}, nil
	}
	if n.parent == nil {
		// A directory whose name is gone: the descriptor pinned for it.
		if e := u.fds.get(fdKey{n, layer}); e != nil {
			return loc{e: e, name: "."}, nil
		}
		return loc{}, unix.ENOENT
	}
	e, err := u.dirFdLocked(n.parent, layer)
	if err != nil {
		return loc{}, err
	}
	return loc{e: e, name: n.name}, nil
}

// lockTop returns where n's topmost entry is, and its layer, with
// u.linkMu held for reading, so that no rename moves the name while the
// caller works on it. Call unlockTop(l) when done, also on error.
func (n *node) lockTop() (loc, int, error) {
	u := n.u
	u.linkMu.RLock()
	top, _ := n.state()
	l, err := u.locLocked(n, top)
	return l, top, err
}

func (n *node) unlockTop(l loc) {
	n.u.fds.release(l.e)
	n.u.linkMu.RUnlock()
}

// hasLinkLocked reports whether (parent, name) is one of n's names.
//
// Preconditions: u.linkMu held (for reading at least).
func (n *node) hasLinkLocked(parent *node, name string) bool {
	if n.parent == parent && n.name == name {
		return true
	}
	for _, l := range n.more {
		if l.parent == parent && l.name == name {
			return true
		}
	}
	return false
}

// addLinkLocked records a new name for n (a lookup reached it by another
// name of a hard link, or by its name again after it had lost it).
//
// Preconditions: u.linkMu held for writing.
func (n *node) addLinkLocked(parent *node, name string) {
	if n.parent == nil {
		n.parent, n.name = parent, name
		return
	}
	if n.parent == parent && n.name == name {
		return
	}
	for _, l := range n.more {
		if l.parent == parent && l.name == name {
			return
		}
	}
	n.more = append(n.more, link{parent, name})
}

// dropLinkLocked forgets the name (parent, name) of n and reports whether
// n has no name left.
//
// Preconditions: u.linkMu held for writing.
func (n *node) dropLinkLocked(parent *node, name string) bool {
	if n.parent == parent && n.name == name {
		n.parent, n.name = nil, ""
		if len(n.more) > 0 {
			n.parent, n.name = n.more[0].parent, n.more[0].name
			n.more = n.more[1:]
		}
	} else {
		for i, l := range n.more {
			if l.parent == parent && l.name == name {
				n.more = append(n.more[:i:i], n.more[i+1:]...)
				break
			}
		}
	}
	if len(n.more) == 0 {
		n.more = nil
	}
	return n.parent == nil
}

// moveLinkLocked renames the name (from, fromName) of n to (to, toName).
//
// Preconditions: u.linkMu held for writing.
func (n *node) moveLinkLocked(from *node, fromName string, to *node, toName string) {
	if n.parent == from && n.name == fromName {
		n.parent, n.name = to, toName
		return
	}
	for i, l := range n.more {
		if l.parent == from && l.name == fromName {
			n.more[i] = link{to, toName}
			return
		}
	}
	n.addLinkLocked(to, toName)
}

// pathLocked is n's path below the layer roots. It keys the cache of
// lower directories: a node with a lower entry never moves (a merged
// directory cannot be renamed, a lower file is copied up first), so its
// path is its lower entry's path for good. It is never opened.
//
// Preconditions: u.linkMu held (for reading at least).
func (n *node) pathLocked() string {
	if n.parent == nil {
		return ""
	}
	var parts []string
	for m := n; m.parent != nil; m = m.parent {
		parts = append(parts, m.name)
	}
	size := len(parts) - 1
	for _, p := range parts {
		size += len(p)
	}
	b := make([]byte, 0, size)
	for i := len(parts) - 1; i >= 0; i-- {
		b = append(b, parts[i]...)
		if i > 0 {
			b = append(b, '/')
		}
	}
	return string(b)
}

// dirAt is a merged directory as the union rules work in it (resolve,
// merge): a node's layers, with the descriptors taken as the rules need
// them and released by done.
type dirAt struct {
	u     *unionFS
	n     *node
	dirs  []layerDir
	key   string // pathLocked, once asked for
	keyed bool
	held  []*fdEntry
	buf   [4]*fdEntry
	// gen is u.linkGen when d was taken: a lookup through d that finds
	// it unchanged knows no name moved or went since.
	gen uint64
}

// at returns the merged directory n for the union rules. Call done.
func (u *unionFS) at(n *node) *dirAt {
	_, dirs := n.state()
	return u.atDirs(n, dirs)
}

// atDirs is at with the layers given.
func (u *unionFS) atDirs(n *node, dirs []layerDir) *dirAt {
	d := &dirAt{u: u, n: n, dirs: dirs, gen: u.linkGen.Load()}
	d.held = d.buf[:0]
	return d
}

// childAt returns the merged directory name of pd, resolved as res, for
// the union rules: through the node the kernel holds for it, or a
// transient one. Call done.
func (u *unionFS) childAt(pd *dirAt, name string, res *resolution) (d *dirAt, done func()) {
	if ch := pd.n.GetChild(name); ch != nil {
		if cn, ok := ch.Operations().(*node); ok {
			d = u.atDirs(cn, res.dirs)
			return d, d.done
		}
	}
	tn := u.newNode(res.top, res.dirs)
	tn.parent, tn.name = pd.n, name
	d = u.atDirs(tn, res.dirs)
	return d, func() {
		d.done()
		u.fds.drop(tn, len(u.layers))
	}
}

// fd returns the directory's descriptor in layer.
func (d *dirAt) fd(layer int) (int, error) {
	if d.n == d.u.root {
		return d.u.rootFds[layer].fd, nil
	}
	for _, e := range d.held {
		if e.key.layer == layer {
			return e.fd, nil
		}
	}
	e, err := d.u.dirFd(d.n, layer)
	if err != nil {
		return -1, err
	}
	d.held = append(d.held, e)
	return e.fd, nil
}

// path is the directory's path below the layer roots (the lower cache's
// key; see pathLocked).
func (d *dirAt) path() string {
	if !d.keyed {
		d.u.linkMu.RLock()
		d.key = d.n.pathLocked()
		d.u.linkMu.RUnlock()
		d.keyed = true
	}
	return d.key
}

func (d *dirAt) done() {
	for _, e := range d.held {
		d.u.fds.release(e)
	}
	d.held = d.held[:0]
}

// procAt names dir/name for the calls that only take a path.
func procAt(dir int, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(dir) + "/" + name
}
