// Package unionfs is the union filesystem: ordered read-only lower
// directories and an optional writable upper directory served as one FUSE
// mount (go-fuse v2 fs API) with the semantics of Linux overlayfs under its
// default options (index=off, redirect_dir=off, metacopy=off).
//
// # Words
//
// A layer is one directory of the stack; layers[0] is the upper when the
// mount has one, the lowers follow topmost first. A node is one merged path
// (the go-fuse Inode tree gives its current path). Resolving a name asks
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
// Lock order, outermost first:
//
//	node.copyMu (one copy-up of that node; a parent's copy-up completes
//	             before the child's copyMu is taken, so they never nest)
//	  node.mu   (top, dirs, last: the node's view of the layers)
//	  node.ioMu (the node's open file handles)
//	fileHandle.mu (the handle's fd; a lower fd is swapped for the upper
//	               copy after a copy-up)
//
// No goroutine holds two nodes' mu at once. Directory operations on one
// parent are serialised by the kernel (i_rwsem), which the whiteout and
// opaque logic relies on.
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
