// Package rules holds the write side of the union rules as plain
// functions over upper-layer directory descriptors: what a new entry does
// to a whiteout, what a removal leaves behind, how a rename moves names
// between layers. They are Linux overlayfs' rules under its defaults
// (redirect_dir=off, index=off), from fs/overlayfs/dir.c; each function
// names the kernel function it follows.
//
// Package unionfs decides where things stand (it resolves names across
// the layers, copies entries up parents first, and holds the locks) and
// calls these functions to change the upper; its FUSE node methods only
// translate. The functions take the facts lookup found as an Entry and
// never look at a lower layer themselves, so tests call them on temporary
// directories without FUSE and without root: the rootless dialect
// (user.overlay.opaque, char 0/0 whiteouts, which Linux lets anyone make
// since 5.8) needs no privilege.
//
// # Words
//
//   - upper directory: a descriptor of a directory in the upper layer,
//     already copied up by the caller (O_PATH is enough).
//   - workdir: Upper.Work, a directory on the upper's filesystem where an
//     entry is built complete before it appears, and where removed trees
//     go to be deleted.
//   - slot: what the upper holds at a name a new entry is made over (Slot):
//     nothing, the kernel's char 0/0 whiteout, or an AUFS ".wh.NAME" beside
//     it (an upper written by podman with a mount_program, or by the
//     fallback of a filesystem that refuses mknod).
//   - Entry: what the union shows at a name: a directory or not, topmost
//     in the upper or in a lower, merged with lower directories, and
//     whether a lower layer shows the name at all.
//
// # The rules
//
//   - Create (file, directory, symlink, node, hard link) over a whiteout:
//     the entry is built in the workdir and swapped with the whiteout in
//     one RENAME_EXCHANGE (ovl_create_over_whiteout), so a crash shows the
//     whiteout or the entry, never the lower entry. A directory made over a
//     whiteout is opaque: the lower directory it replaces stays hidden.
//     Over a ".wh.NAME" the entry is made in place, and the marker removed
//     after. A ".wh." name cannot be made (it would read back as a
//     whiteout): EPERM.
//
//   - Remove (unlink, rmdir; ovl_do_remove): a name whose topmost entry is
//     lower becomes a whiteout; an upper entry is removed, leaving a
//     whiteout (RENAME_WHITEOUT where the filesystem has it) when, and
//     only when, a lower layer still shows the name. A directory goes
//     through the workdir, so the whiteouts inside it go with it.
//
//   - Rename (ovl_rename): a directory with a lower part cannot move
//     (EXDEV: no redirects); RENAME_NOREPLACE and RENAME_EXCHANGE work,
//     every other flag is EINVAL (RENAME_WHITEOUT too, as in the kernel). A
//     whiteout is left at the source when a lower layer shows its name. A
//     target that is a whiteout is replaced by the entry; an upper target
//     directory that is empty in the union but holds whiteouts is first
//     swapped for an empty opaque one (ovl_clear_empty). A directory moved
//     into a merged directory is marked opaque before it moves, so it never
//     merges with a lower directory of its new name.
//
//   - Copy-up (ovl_copy_up_flags): parents first, each step one entry
//     copied into the upper copy of its parent (CopyUp, a transaction of
//     package copyup); a directory comes up empty. unionfs walks its
//     nodes that way under their copy-up locks. Every other rule expects
//     the entries it moves and the directories it works in to be in the
//     upper already.
//
// # Tests
//
// Each rule runs on a lower and an upper built from fixtures; the upper
// it leaves is compared with a declared listing and with the upper kernel
// overlayfs leaves after the same operation through a kernel mount
// (userxattr). TestUnprivileged runs them all again as uid 65534.
package rules
