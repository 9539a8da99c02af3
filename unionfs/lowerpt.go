package unionfs

import (
	"github.com/hanwen/go-fuse/v2/fs"
)

// Passthrough of lower files (Options.LowerPassthrough).
//
// The kernel reads a passthrough handle's backing file itself, and it
// gives one FUSE inode one backing file while any passthrough handle is
// open (a second one fails with EBUSY; go-fuse instead hands every open
// of the inode the first handle's backing). A handle opened on a lower
// file therefore cannot follow the file to the upper after a copy-up, and
// an open of the copy cannot share the inode with it.
//
// So the open that meets handles backed by another layer than its own
// re-keys the node: the node's identity gets the next generation, and the
// open fails with ESTALE. The kernel's open retries once with LOOKUP_REVAL,
// our LOOKUP answers with a new node (same st_ino, new generation), and
// the open succeeds there. The old node lives on with its lower handles
// until they close: they read the file as it was before the copy-up, as
// on kernel overlayfs before 4.19 and on fuse-overlayfs.

// currentGen is the generation a node first keyed sa has now.
func (u *unionFS) currentGen(sa fs.StableAttr) uint64 {
	if g, ok := u.regen.Load(sa); ok {
		return g.(uint64)
	}
	return sa.Gen
}

// rekey gives n's identity the next generation: lookups from now on make
// a new node for its file.
func (u *unionFS) rekey(n *node) {
	sa := n.StableAttr()
	base := fs.StableAttr{Mode: sa.Mode, Ino: sa.Ino, Gen: n.baseGen}
	u.regen.Store(base, sa.Gen+1)
}
