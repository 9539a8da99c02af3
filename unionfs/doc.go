// Package unionfs is the union filesystem: ordered read-only lower
// directories and an optional writable upper directory served as one FUSE
// mount (go-fuse v2 fs API) with the semantics of Linux overlayfs under its
// default options (index=off, redirect_dir=off, metacopy=off).
//
// # Words
//
// A layer is one directory of the stack; layers[0] is the upper when the
// mount has one, the lowers follow topmost first. A node is one entry of
// the merged tree; its link (parent node, name) says where it stands, and
// its entry in a layer is that name in the parent's directory of that
// layer. Directory nodes hold a descriptor of their directory in each
// layer, in a bounded LRU, reopened from the parent's by one openat of
// one name when dropped (ref.go, link.go): every operation is an *at()
// call from a directory the daemon holds, at any depth, and no path is
// ever rebuilt. A held descriptor follows its directory through renames;
// a rename moves the link under u.linkMu together with the change on
// disk. Resolving a name asks
// each layer of the parent directory in turn (resolve.go): the first entry
// wins, a whiteout ends the search, a non-directory hides everything below,
// directories merge until an opaque one. A merged listing (merge.go) takes
// upper names, then each lower's names not seen yet, dropping names a layer
// above deleted. Both are plain functions over layer directories, tested
// without FUSE (resolve_test.go); the node methods are thin adapters.
//
// # Writes
//
// Every change lands in the upper. A lower entry is copied up (package
// copyup, parents first, one copy-up per node at a time) before it is
// written, chmod'ed, linked or renamed; removing a name a lower layer still
// shows leaves a char 0/0 whiteout (RENAME_WHITEOUT where possible); a
// directory made over a whiteout, or an upper-only directory moved into a
// merged one, is marked opaque; renaming a directory with a lower part gives
// EXDEV (redirect_dir=off). Markers are written as the kernel writes them,
// trusted.overlay.* as root and user.overlay.* otherwise (package whiteout).
//
// These write rules are plain functions over upper directory descriptors
// in package unionfs/rules (create over a whiteout, remove, rename, the
// checks before each, one copy-up step), tested on temporary directories without FUSE
// or root and against kernel overlayfs. The node methods (write.go,
// rename.go) resolve the names, copy up, hold linkMu and update the
// links; they hand what lookup found to the rules as a rules.Entry and
// let the rules change the upper.
//
// # Inode numbers
//
// go-fuse merges nodes that share (mode, ino, gen), so numbers must be
// unique: the real number when layers share a filesystem, else tagged with
// the filesystem (inoMapper). A copy-up records the origin's number in
// *.overlay.unionmount.origin so it survives copy-up and remount. Each name
// of a lower hard link is its own node (same ino, a gen from the path), so
// copying one alias up breaks the link as the kernel does.
//
// # Locks
//
// Lock order, outermost first; a lock may be taken while holding only
// locks listed above it (indented: taken inside its parent line):
//
//	noOpendir.mu, then dirSlot.mu (a directory's borrowed handle; the
//	        request runs through the node methods below with it held)
//	dirHandle.mu (a listing; released before a lookup of an entry)
//	node.copyMu (one copy-up of that node; copyUp holds a child's while it
//	        takes its parent's, so they nest from the node towards the
//	        root, never the other way)
//	unionFS.linkMu (every node's link; written by Rename and remove around
//	        their change on disk, read by whatever turns a link into a
//	        name under a held directory and works on it)
//	  fileHandle.mu (the handle's fd; getFd opens the upper copy before
//	          taking it)
//	  node.mu (top, dirs, last: the node's view of the layers)
//	  node.ioMu (the node's open file handles; detachedFd takes
//	          fileHandle.mu after releasing it)
//	  dirFds.mu (the descriptor LRU; nothing is taken inside it)
//	inoMapper.mu (leaf)
//
// Each lock has a rank in this order (locks.go). A build with -tags
// lockcheck (the race daemon of make build-race, which the integration
// tests mount) checks every acquisition against the locks its goroutine
// holds and stops the daemon on an inversion (package internal/lockrank).
//
// No goroutine holds two nodes' mu, ioMu or two handles' mu at once.
// Directory operations on one parent are serialised by the kernel
// (i_rwsem), which the whiteout and opaque logic relies on; the link of
// a node whose name a rename or an unlink changes is the only shared
// state those operations change for others, hence linkMu.
//
// # Caches
//
// The kernel caches entries and attributes for Options.EntryTimeout and
// AttrTimeout: lowers are immutable while mounted and every change goes
// through us. Lower directories' name tables (entries, deleted names,
// opacity) sit in a ristretto cache (cache.go); lowers never change, so an
// entry is never stale, and a miss reads the directory again: the cache is
// a hint, never the truth. The upper is never cached here.
//
// # I/O
//
// Upper files open with FUSE passthrough when the kernel allows it; lower
// files are read through the daemon with splice and FOPEN_KEEP_CACHE, so a
// read-only handle follows its file to the upper after a copy-up. The
// kernel refuses to mix cached and passthrough opens of one inode, so a
// node with cached opens stays cached until they close.
package unionfs
