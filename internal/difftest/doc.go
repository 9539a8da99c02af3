// Package difftest is the differential test of unionmount against kernel
// overlayfs: random scripts of filesystem operations run on both
// over identical layer stacks, and everything a user can observe is
// compared.
//
// # Model
//
// A script is a list of Ops on a small, fixed name space (Names: a, b, c,
// d, d/x, d/y, e, e/f, e/f/g, ...), so that operations collide: a rename
// lands on a name another op created, a mkdir meets a whited-out file. Each
// Op records what it observed as a Result: the errno and a small value
// (sizes, sorted names, a content hash, a link target), plus raw inode
// identities and modification times that the comparison interprets instead
// of comparing them as numbers.
//
// A Stack is a generated set of 2-3 lower layers and an initial upper
// (files, dirs, symlinks, hard links, FIFOs, char 0/0 whiteouts, opaque
// dirs), built from a seed. It is built twice, once for the kernel and once
// for unionmount, so neither side can see the other's files.
//
// # Runs
//
// A script runs in a child process (the test binary re-executed with
// DIFFTEST_RUN=1, reading a Job and writing a Run as JSON), never in the
// test process itself: a process must not touch a FUSE mount it serves, and
// the kernel side runs the same way so both see the same process state.
//
// # Comparison
//
// CompareRuns checks, in this order: every op's errno and value; the merged
// trees before (for odd seeds) and after the script (fstest.Snapshot and
// fstest.Diff, access and change times ignored, modification times only
// for files whose mtime is known to be deterministic: untouched since the
// stack was built, or set by the script with utimes); inode identity, as
// equality classes over every inode number observed during the run (so a
// file keeps its number across copy-up and rename exactly when the kernel
// keeps it); and the upper directories, less the kernel's and unionmount's
// bookkeeping xattrs. The test then cross-mounts: kernel overlayfs over
// unionmount's upper must show unionmount's final tree, and unionmount over
// the kernel's upper the kernel's; and it remounts each side over its own
// upper, which must show the same tree and keep inode numbers exactly
// where the kernel keeps them.
//
// Layers and mounts live on a tmpfs that the test mounts: it never reuses
// an inode number, so equal numbers within a run mean one inode.
//
// # Running it
//
//	go test ./internal/difftest                      # 20 seeds x 150 steps
//	go test ./internal/difftest -run TestDiff -v \
//	    -difftest.seeds 200 -difftest.steps 500      # long mode
//	go test ./internal/difftest -run 'TestDiff/seeds/seed=7$' \
//	    -difftest.seed 7 -difftest.seeds 1 -difftest.script '[...]'
//
// The last form replays a (shrunk) script that a report printed.
//
// Known differences (deliberate ones, limits of FUSE, kernel quirks that no
// user sees) are listed in knownDifferences (difftest_test.go) with their
// reason; everything else is a bug in one of the two. A failing script is
// shrunk by delta debugging and printed with both sides' results.
package difftest
