// Package reliability holds the reliability tests of the union mount
// itself: permissions and the overlay xattr namespace, faults from
// below (a full upper, file descriptor exhaustion, lowers changed while
// mounted, unmounts and signals while busy), load from many processes
// against a daemon built with -race, and the fsx-style data-integrity
// exerciser (package fsx) through the mount.
//
// Everything runs through real mounts of the unionmount binary made in the
// tests' temporary directories, with kernel overlayfs as the reference where
// the two should agree. The tests need root and /dev/fuse and skip with the
// reason otherwise.
//
// # Modes
//
// The default run takes about two minutes on two cores. The long mode
//
//	go test ./internal/reliability -run . -reliability.long -timeout 2h
//
// runs the exerciser for a million operations per configuration, the load
// for five minutes and the memory walk over a million entries. Single knobs
// (-reliability.fsxops, -reliability.loadtime, -reliability.workers,
// -reliability.walk, -reliability.seed) override either mode.
//
// # Lowers changed while mounted
//
// Overlayfs leaves changes to a lower layer while mounted undefined.
// TestLowerChangedUnderneath checks that they never hang or crash the
// daemon, and that the mount shows what follows, step by step (with
// --timeout 0; with the default one-hour timeout the kernel may keep
// showing cached attributes):
//
//   - A removed lower directory and its children give ENOENT to stat,
//     open, readdir, create in it and copy-up; a descriptor opened before
//     keeps reading the old data; an open directory handle gives ENOENT at
//     its next readdir.
//   - A file replaced by a directory, or the reverse, shows its new type at
//     once (EISDIR, ENOTDIR); a rewritten lower file shows its new size and
//     data, and copies up what is there now.
//   - The whole lower renamed away: data and xattrs keep coming through
//     the layer's directory descriptor; another directory put at the old
//     path is not consulted.
//   - The whole lower removed: its entries give ENOENT; a listing of the
//     root still shows the removed names with the lookup cache on (it
//     trusts lowers not to change) and fails with ENOENT without it; the
//     upper keeps working.
//
// # Processes
//
// A process must not use a FUSE mount it serves, and the checks that must
// run as another user or as many processes need processes of their own: the
// test binary re-executes itself with RELIABILITY_WORKER set (see
// worker_test.go), as nobody (65534) or as uid 4242 for the permission
// checks, and as 16 or more load workers.
package reliability
