// Package bench measures union filesystems against each other and against
// the kernel: the engine behind cmd/unionbench.
//
// The words:
//
//   - A Driver mounts a Stack (read-only lowers, an empty upper and a
//     workdir) one way: a plain directory holding the merged content (the
//     physical limit), kernel overlayfs (as root and in a user namespace),
//     unionmount (as root, without passthrough, and as a user),
//     fuse-overlayfs, unionfs-fuse. Each driver is one file (driver_*.go);
//     one that cannot run here says why and is reported as skipped. A mount
//     may name the user the workload runs as (the rootless one does).
//   - A Dataset is a set of layers generated from a fixed seed, built once
//     into the data directory and reused while its parameters stay the same.
//   - A Case is one scenario: a dataset to mount and the timed work to do in
//     the merged view. Every (case, repetition, driver) gets a fresh mount
//     with an empty upper, so no run sees another's caches or copy-ups
//     (cold cases also drop the page cache before mounting).
//   - A Sample is one timed section of a case (a Metric): wall time from the
//     monotonic clock, the FUSE daemon's CPU time over the same section.
//
// The runner interleaves drivers (A B C, B C A, ...) over the repetitions so
// that drift on a shared machine hits every driver alike, and the report
// gives medians, spread and ratios to kernel overlayfs and to
// fuse-overlayfs. All I/O runs in this process or in tools it starts (tar,
// grep, chown, rm), never in a FUSE daemon's process: as root, or as the
// mount's user, with that user's fsuid on a locked thread (asUser).
package bench
