// Package oracle holds the read-side comparison of unionmount with kernel
// overlayfs; it has no code outside its tests.
//
// Each test generates a stack of layers from a fixed seed (random dirs,
// files, symlinks, hard links, special files, whiteouts and opaque dirs over
// a shared name space, so that layers overlap: files replaced by dirs and
// dirs by files, deletions, re-creation above a deletion, opaque dirs at
// depths 1 to 4), mounts it once with kernel overlayfs and once with the
// unionmount binary, and compares the two merged trees with fstest.Diff.
// The whiteout dialects the kernel cannot read (AUFS .wh. files,
// user.fuseoverlayfs.opaque) are compared by writing the same stack twice:
// in that dialect for unionmount and in the kernel's for the kernel, for
// lowers (TestDialects) and for an upper (TestDialectsInUpper).
//
// The generator also predicts the merged tree itself (mergeLayers), and
// TestKernelMatchesModel checks the kernel against that prediction: it runs
// without the binary and proves the harness before unionmount is judged by
// it.
//
// Deliberate differences from the kernel are listed in knownDifferences
// with their reason; docs/semantics.md carries the same list.
//
// go test ./internal/oracle -args -oracle.subject=fuse-overlayfs judges
// fuse-overlayfs instead of unionmount, a check of the harness against a
// second implementation.
package oracle
