// Package copyup copies one entry of a read-only lower layer into the upper
// layer as a small transaction, the way Linux overlayfs does it
// (fs/overlayfs/copy_up.c: ovl_copy_up_workdir), so that a crash at any
// moment leaves either nothing in the upper or the complete entry.
//
// The caller (package unionfs) decides when to copy up, copies parents
// first, runs at most one copy-up per node at a time and deals with
// whiteouts. This package does one entry: Entry. CleanWorkdir removes what
// interrupted copy-ups left in the workdir and is meant for mount time.
//
// # Words
//
//   - source: the lower entry, named by a directory fd and a name, with the
//     lstat the caller already has. Its type, mode, owner, times and device
//     number come from that stat; its data and xattrs are read from the
//     layer.
//   - workdir: a directory on the upper's filesystem, private to the mount.
//   - temp: the entry being built in the workdir, named TempPrefix plus a
//     random suffix. Only temps ever carry TempPrefix.
//   - step: one named stage of the transaction (the Step constants). A
//     failure is reported as a *StepError naming the step.
//
// # Steps
//
// Everything up to the rename happens to the temp inside the workdir:
//
//  1. StepCreate: create the temp with the source's type and a private
//     mode: a regular file with openat(O_CREAT|O_EXCL, 0600), a directory
//     with mkdirat(0700) and no children, a symlink with the source's
//     target, a FIFO, socket or device with mknodat and the source's rdev.
//  2. StepData (regular files, unless Options.SkipData): FICLONE (a
//     reflink, instant on btrfs and xfs); else copy_file_range over the
//     source's data segments only (SEEK_DATA/SEEK_HOLE), so holes stay
//     holes, then ftruncate to the source size so a trailing hole stays
//     too; else pread/pwrite over the same segments. Each method falls back
//     to the next when the filesystems refuse it (EXDEV between
//     filesystems, EOPNOTSUPP, EINVAL, a seccomp EPERM).
//  3. StepOwner: fchownat to Options.UID/GID or the source's owner.
//  4. StepXattrs: the source's xattrs, filtered (below), then
//     Options.Xattrs.
//  5. StepMode: fchmodat to the full mode including setuid, setgid and
//     sticky (not for symlinks, whose mode Linux fixes at 0777).
//  6. StepTimes: utimensat(AT_SYMLINK_NOFOLLOW) to the source's atime and
//     mtime, to the nanosecond. The ctime cannot be set and is the
//     copy-up's.
//  7. StepSync: fsync the temp (regular files and directories) so data
//     and metadata are on disk before the name appears. Skipped with
//     Options.NoFsync, and for a regular file without data (empty, or
//     SkipData), as the kernel skips it.
//  8. StepRename: renameat2(workdir/temp, upperdir/name, RENAME_NOREPLACE).
//     This is the commit point: the only step that touches the upper
//     directory. An existing name gives EEXIST and is left untouched; a
//     workdir on another filesystem gives EXDEV.
//  9. StepRestoreMode: only for a read-only directory copied by a daemon
//     without CAP_DAC_OVERRIDE. Moving a directory to another parent
//     rewrites its "..", which needs write permission on it, so the rename
//     retries with the owner write bit added, and this step removes it.
//  10. StepSyncDir: fsync the upper directory so the new name is durable.
//     Only with Options.SyncDir (kernel overlayfs skips it too: the rename
//     is committed with the next fsync of the file, and a crash before
//     that shows the old view).
//
// Any failure in steps 1-8 runs the one rollback path: close the temp and
// remove it; the upper is untouched. A failure after the rename leaves the
// entry in place (StepError.Committed): its mode (step 9) or durability
// (step 10) may be off, and the caller should report it, not retry.
//
// Fsync: one fsync of the temp after all its metadata, rather than
// overlayfs' fsync right after the data. It covers data and metadata at
// once and costs one journal commit instead of two.
//
// # Ordering of the metadata: owner, xattrs, mode, times
//
// Owner first, because chown clears setuid, setgid and security.capability.
// Xattrs before the mode, unlike overlayfs' in-kernel order (xattrs, mode,
// owner), which userspace cannot follow because chown has those side
// effects: an unprivileged owner needs write permission on the inode to set
// user.* xattrs, which a read-only source mode (0444) would take away, and
// setting system.posix_acl_access rewrites the group bits from the ACL mask
// and may clear setgid. The mode set afterwards is exactly the source's and
// leaves the ACL as it was (the ACL's owner, mask and other entries already
// equal the source's mode bits). Times last, because every earlier step
// may change them.
//
// # Xattrs
//
// Carried: everything, including security.capability and the POSIX ACLs
// (system.posix_acl_access, system.posix_acl_default), except the union
// bookkeeping of any layer, which whiteout.IsPrivateXattr names
// ("trusted.overlay.*", "user.overlay.*" with their escaped
// "*.overlay.overlay.*" forms, "user.unionmount.*", "user.fuseoverlayfs.*"):
// an opaque marker carried up would hide the lower directory's children,
// and an origin must describe the new copy. The caller sets its own
// bookkeeping with Options.Xattrs.
//
// Failures follow the kernel (ovl_copy_xattr): POSIX ACLs and security.*
// must be copied and any failure fails the copy-up, except security.selinux,
// whose failures are ignored (the kernel relabels instead of copying);
// EOPNOTSUPP from the upper is ignored for other names; trusted.* is also
// skipped on EPERM (an unprivileged daemon cannot write it).
// Options.Xattrs must all be set, except user.* names on symlinks and
// special files, which Linux refuses (EPERM) and which are skipped.
//
// # Crash guarantee
//
// The upper changes only at the rename, which is atomic. Killed at any
// earlier step, the copy-up leaves only a temp in the workdir, which
// CleanWorkdir removes at the next mount; killed after it, the entry is
// complete. With fsync on (the default), the temp's data and metadata are
// on disk before the rename, and the rename is on disk when Entry returns
// with Options.SyncDir or after the next fsync of the file, so a power
// failure has the same two outcomes. (The one exception is the
// StepRestoreMode window above: a crash there leaves a complete directory
// that is owner-writable.) For symlinks and special
// files, which cannot be fsynced, this relies on the filesystem committing
// the inode with the rename, as journalling filesystems (ext4, xfs, btrfs)
// do. With Options.NoFsync (volatile mounts) a power failure may leave a
// partial file in the upper, as with overlayfs' volatile option.
//
// Paths are never used for the layers: the source is opened with openat and
// O_NOFOLLOW relative to its directory fd, the temp is addressed relative to
// the workdir fd, and the xattr calls that need a path go through
// /proc/self/fd/N/NAME with the l* variants, which do not follow a symlink
// in the last component.
package copyup
