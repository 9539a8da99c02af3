package unionfs

import (
	"log"
	"time"
)

// IDMap is one range of an id mapping: ids [Container, Container+Size) in
// the mount correspond to [Host, Host+Size) in the layers.
type IDMap struct {
	Container, Host, Size uint32
}

// Options configures a union mount. The command line fills it; nothing in
// this package reads flags, the environment or globals.
type Options struct {
	// Lowers are the read-only layers, topmost first (overlayfs lowerdir order).
	Lowers []string
	// Upper is the writable layer; empty means a read-only mount (EROFS).
	Upper string
	// Workdir is a scratch directory on the upper's filesystem for atomic
	// copy-up. Required when Upper is set.
	Workdir string

	// Kernel cache timeouts. Lowers are immutable and every change goes
	// through us, so long timeouts are safe.
	EntryTimeout    time.Duration
	AttrTimeout     time.Duration
	NegativeTimeout time.Duration

	// LookupCacheEntries bounds the ristretto cache of lower-directory name
	// tables (cost = entries). 0 disables the cache.
	LookupCacheEntries int64

	// MaxDirFds bounds the directory descriptors the daemon holds for the
	// nodes the kernel knows (an LRU; a directory whose descriptor was
	// dropped is reopened from its parent's). 0 means DefaultMaxDirFds,
	// or a quarter of RLIMIT_NOFILE when that is lower.
	MaxDirFds int

	// NoFsync skips fsync on copy-up (volatile, fsync=0).
	NoFsync bool
	// Rootless writes user.overlay.* markers instead of trusted.overlay.*.
	Rootless bool
	// Passthrough enables FUSE passthrough for upper files when the kernel
	// allows it.
	Passthrough bool
	// LowerPassthrough also opens lower files read-only with passthrough,
	// so reads of image content cost what they cost on the kernel. The
	// kernel gives an inode one backing file, so a handle opened on the
	// lower file keeps reading it after a copy-up (overlayfs before 4.19):
	// the open that meets such handles gets ESTALE, the kernel looks the
	// name up again, and the file continues as a new inode (same st_ino).
	// See docs/semantics.md.
	LowerPassthrough bool

	// UIDMap/GIDMap shift owners between layer ids (Host) and mount ids
	// (Container). Empty means identity.
	UIDMap, GIDMap []IDMap
	// SquashUID/SquashGID, when >= 0, report every file as owned by that id.
	// Set them to -1 for no squashing (the zero value squashes to root).
	SquashUID, SquashGID int64

	// ReadAheadKB is the kernel read-ahead for the mount: 0 means
	// DefaultReadAheadKB, negative leaves the kernel's default.
	ReadAheadKB int

	// Mount options.
	AllowOther  bool
	DirectMount bool
	// IoUring serves requests over FUSE-over-io_uring when the kernel
	// offers it (fuse.MountOptions.IoUring), else through /dev/fuse.
	IoUring bool
	Debug   bool   // FUSE op trace to Logger
	FsName  string // shown in /proc/mounts; default "unionmount"

	// Logger receives diagnostics; nil means log.Default().
	Logger *log.Logger
}
