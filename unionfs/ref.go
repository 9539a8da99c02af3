package unionfs

import (
	"github.com/unionmount/unionmount/internal/lockrank"
	"golang.org/x/sys/unix"
)

// How a node reaches its entries in the layers.
//
// A node knows where it stands in the merged tree by its link: its parent
// node and its name there (link.go). Its entry in layer L is that name in
// the parent's directory in L, so every operation is an *at() call on a
// directory descriptor the daemon holds, at any depth. A directory node's
// own descriptor in a layer (O_PATH) lives in dirFds, a bounded LRU: a
// miss reopens it from the parent's descriptor with one openat of one
// component, the parent's the same way, up to the root, whose layer
// descriptors are held for the life of the mount. A held descriptor
// follows its directory through renames; the link says where it is now.

// fdKey names one directory descriptor: a node's directory in one layer.
type fdKey struct {
	n     *node
	layer int
}

// fdEntry is one held directory descriptor (O_PATH|O_DIRECTORY).
type fdEntry struct {
	key fdKey // set once
	fd  int   // set once; closed when dropped or evicted and not in use
	// refs counts the users between acquire and release; an entry in use
	// is never closed. Guarded by dirFds.mu.
	refs int
	// pinned: the entry stays until its node is forgotten (a directory
	// whose name is gone cannot be reopened). Guarded by dirFds.mu.
	pinned bool
	// dead: out of the table; closed when refs drops to 0. Guarded by
	// dirFds.mu.
	dead bool
	// static: a layer root, never closed here.
	static     bool
	prev, next *fdEntry // LRU list, most recent first; guarded by dirFds.mu
}

// dirFds is the LRU of directory descriptors. It bounds what the daemon
// holds: a walk of a million directories keeps the latest max of them,
// plus those in use at the moment.
type dirFds struct {
	max int

	mu lockrank.Mutex[rankFds]
	m  map[fdKey]*fdEntry // guarded by mu
	// list is the LRU order of the entries that are not pinned (pinned
	// ones leave it); its sentinel. Guarded by mu.
	list fdEntry
	// pinned counts the pinned entries of m, which do not count against
	// max. Guarded by mu.
	pinned int
}

// DefaultMaxDirFds is the bound on the directory descriptors held for
// nodes when Options.MaxDirFds is 0.
const DefaultMaxDirFds = 4096

func newDirFds(max int) *dirFds {
	c := &dirFds{max: max, m: map[fdKey]*fdEntry{}}
	c.list.prev, c.list.next = &c.list, &c.list
	return c
}

func (c *dirFds) unlinkLocked(e *fdEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (c *dirFds) pushFrontLocked(e *fdEntry) {
	e.prev, e.next = &c.list, c.list.next
	c.list.next.prev = e
	c.list.next = e
}

// get returns the held entry of k with a reference, or nil.
func (c *dirFds) get(k fdKey) *fdEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[k]
	if e == nil {
		return nil
	}
	e.refs++
	if !e.pinned {
		c.unlinkLocked(e)
		c.pushFrontLocked(e)
	}
	return e
}

// add holds fd as the descriptor of k and returns it with a reference. If
// another goroutine added k first, fd is closed and that entry returned.
func (c *dirFds) add(k fdKey, fd int) *fdEntry {
	c.mu.Lock()
	if e := c.m[k]; e != nil {
		e.refs++
		c.mu.Unlock()
		unix.Close(fd)
		return e
	}
	e := &fdEntry{key: k, fd: fd, refs: 1}
	c.m[k] = e
	c.pushFrontLocked(e)
	var closing []int
	for p := c.list.prev; len(c.m)-c.pinned > c.max && p != &c.list; {
		prev := p.prev
		if p.refs == 0 {
			c.unlinkLocked(p)
			delete(c.m, p.key)
			closing = append(closing, p.fd)
		}
		p = prev
	}
	c.mu.Unlock()
	for _, fd := range closing {
		unix.Close(fd)
	}
	return e
}

// release drops a reference that get or add gave.
func (c *dirFds) release(e *fdEntry) {
	if e == nil || e.static {
		return
	}
	c.mu.Lock()
	e.refs--
	closeIt := e.dead && e.refs == 0
	c.mu.Unlock()
	if closeIt {
		unix.Close(e.fd)
	}
}

// pin keeps e until drop (its node lost its name).
func (c *dirFds) pin(e *fdEntry) {
	if e.static {
		return
	}
	c.mu.Lock()
	if !e.dead && !e.pinned {
		e.pinned = true
		c.pinned++
		c.unlinkLocked(e)
	}
	c.mu.Unlock()
}

// drop forgets every descriptor of n: those in use close when released.
func (c *dirFds) drop(n *node, layers int) {
	var closing []int
	c.mu.Lock()
	for l := 0; l < layers; l++ {
		e := c.m[fdKey{n, l}]
		if e == nil {
			continue
		}
		delete(c.m, e.key)
		if e.pinned {
			c.pinned--
		} else {
			c.unlinkLocked(e)
		}
		e.dead = true
		if e.refs == 0 {
			closing = append(closing, e.fd)
		}
	}
	c.mu.Unlock()
	for _, fd := range closing {
		unix.Close(fd)
	}
}

// held is the number of descriptors held, pinned ones included (tests).
func (c *dirFds) held() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// closeAll closes every descriptor not in use (unmount).
func (c *dirFds) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.m {
		delete(c.m, k)
		e.dead = true
		if e.refs == 0 {
			unix.Close(e.fd)
		}
	}
	c.list.prev, c.list.next = &c.list, &c.list
	c.pinned = 0
}
