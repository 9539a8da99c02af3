// Package layer converts between layer tars (OCI/docker image layers) and
// layer directories in the on-disk format the union reads.
//
// # Dialects
//
//	in the tar (OCI)            on disk (what Apply writes, WriteTar reads)
//	.wh.NAME                    char device 0/0 NAME (rootless too: mknod of
//	                            0/0 needs no privilege since Linux 5.8); the
//	                            AUFS file .wh.NAME where mknod is refused
//	DIR/.wh..wh..opq            trusted.overlay.opaque=y on DIR as root,
//	                            user.overlay.opaque=y rootless
//	SCHILY.xattr.*              xattrs, less *.overlay.* and *.unionmount.*
//	                            (a layer must not plant markers)
//	.wh..wh.plnk/... (AUFS)     skipped
//
// WriteTar also reads the other markers the union understands (AUFS files,
// xattr whiteouts in opaque=x directories, user.fuseoverlayfs.opaque), so
// it can write any upper as a layer.
//
// # Hostile input
//
// Apply unpacks into an empty directory of its own: every path is resolved
// through the directory's os.Root and created with *at calls on the
// parent's descriptor (O_EXCL, O_NOFOLLOW, AT_SYMLINK_NOFOLLOW), so
// nothing is ever followed. On top of that, the applier keeps a table of
// what it created and refuses (with the sentinel errors of package image):
// absolute names and ".." components (ErrUnsafePath), entries below a
// symlink of the layer (ErrUnsafePath: writes through symlinks are how
// layers escape), hard links to anything but an earlier file of the same
// layer (ErrUnsafePath), a path named twice or both an entry and a
// whiteout (ErrDuplicateEntry), device nodes unless the caller may create
// them (ErrDeviceNode), unknown entry types (ErrUnsupported), and a stream
// that is cut short, corrupt, or ends without the end-of-archive blocks
// (ErrCorrupt); names Linux cannot hold, a component over NAME_MAX or a
// path of PATH_MAX or more, before anything is made (ErrUnsupported); and
// a layer that expands past ApplyOptions.MaxSize, in its stream or in the
// content it writes (ErrTooLarge: decompression bombs, sparse entries
// that claim terabytes). Setuid files and, with Devices, device nodes are
// kept, as docker keeps them: the store root is private and the union
// nodev (docs/images.md). FuzzApply checks that nothing outside the
// target changes whatever the input; hostile_test.go holds the corpus.
//
// # Ordering traps that do not arise here
//
// Appliers that unpack onto a merged tree (umoci's oci/layer, docker's
// vfs) must order work carefully: a whiteout after an entry of the same
// layer must not delete that entry, and an opaque marker hides only the
// lower layers, not the entries of its own layer that came before it.
// Here every layer gets a directory of its own and whiteouts are only
// markers for the layers below, so order does not matter; a layer that
// names a path both ways is refused instead. What does matter is that a
// directory created only as the parent of entries must not hide the
// attributes of the directory below it in the union: ApplyOptions.Lower
// gives it those attributes.
//
// # Exact tars
//
// The tar-split record (tarsplit.go) keeps what Apply read that is not a
// file's content, so Reassemble gives back the exact tar and an image is
// saved with the diff_ids (and so the ID) it was loaded with.
//
// # Changes
//
// Changes lists docker diff's A/C/D from an upper directory alone, asking
// a View of the lower layers about the paths it finds: its cost follows
// the size of the change, not of the image.
package layer
