// Package whiteout is the vocabulary of deletions and opaque directories in
// union layers: every dialect we read, and the kernel's format we write.
//
//	marker                                   read  write
//	char device 0/0 NAME                     yes   default whiteout
//	.wh.NAME (AUFS, OCI layer tars, podman)  yes   fallback when mknod is refused
//	{trusted,user}.overlay.opaque=y on dir   yes   default opaque (trusted. as root)
//	.wh..wh..opq inside dir                  yes   fallback when the xattr is refused
//	{trusted,user}.overlay.whiteout on an
//	  empty file, parent opaque=x            yes   no
//	user.fuseoverlayfs.opaque=y              yes   no
//	.wh..wh.plnk, .wh..wh.aufs, .wh..wh.orph hidden no
//
// A whiteout in a layer hides the name in every layer below it and never
// shows itself. An opaque directory hides the directories of the same name
// below it. An opaque marker of value "x" is not opaque: it says the
// directory may hold xattr whiteouts (kernel 6.7+).
//
// Every *.overlay.* xattr is private: the union hides it and refuses to set
// it, so nobody can plant a whiteout or an opaque marker through a mount.
package whiteout
