// Package fstest is the shared kit of unionmount's integration tests:
// fixtures declared as data, whole-tree snapshots that can be compared, and
// helpers that mount kernel overlayfs (the oracle) and the unionmount binary
// (the system under test) in a test's temporary directories.
//
// # Fixtures
//
// A layer is built by applying Appliers to a directory, in the style of
// containerd's continuity fstest:
//
//	err := fstest.Apply(layer,
//		fstest.CreateDir("etc", 0o755),
//		fstest.CreateFile("etc/hosts", []byte("127.0.0.1 localhost\n"), 0o644),
//		fstest.Whiteout("etc/motd"),
//		fstest.Opaque("var"),
//	)
//
// Paths are relative to the root given to Apply and are not sanitised: the
// fixtures are trusted test data. Every whiteout dialect unionmount reads has
// a constructor (see whiteout.go); the names and xattrs are spelled out here
// on purpose instead of being imported from package whiteout, so that a
// mistake there cannot hide itself in the tests.
//
// # Snapshots
//
// Snapshot walks a tree without following symlinks and records, for every
// path, what a user of the tree can observe: type, permission bits with
// setuid/setgid/sticky, owner, size, a content hash, link target, device
// number, link count, xattrs (less the overlay bookkeeping names) and an inode
// equality class. Diff compares two snapshots and returns sorted, readable
// lines ("a/b: mode 0644 != 0755", "x: missing", "y: unexpected"), the
// first value always being the wanted one. ReadDirents (raw d_ino), Inos,
// Xattrs and DataExtents (SEEK_DATA/SEEK_HOLE) serve the checks a snapshot
// does not cover.
//
// # Mounts
//
// MountKernelOverlay and MountUnion mount in directories the test owns and
// register a t.Cleanup that unmounts and, for unionmount, checks that the
// daemon exited 0. RequireRoot, RequireFUSE and RequireOverlay skip a test
// with the reason when the machine cannot run it. Binary builds
// ./cmd/unionmount once per test process ($UNIONMOUNT_BIN overrides it; a
// TestMain should call RemoveBinary after m.Run). WriteFuseOverlayfsShim
// lets MountUnion run fuse-overlayfs instead, to check a harness against a
// second implementation.
package fstest
