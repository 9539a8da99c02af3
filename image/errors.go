package image

import "errors"

// Sentinel errors. Every package under image wraps one of these with
// context, so callers test the kind with errors.Is and users read the
// wrapped message.
var (
	// ErrUnsafePath: a layer entry names a path outside the layer: an
	// absolute name, a ".." component, a path through a symlink, or a hard
	// link whose target is not an earlier entry of the same layer.
	ErrUnsafePath = errors.New("unsafe path in layer")
	// ErrDuplicateEntry: a layer names one path twice (also a whiteout and
	// an entry of the same name, or an entry below a non-directory of the
	// same layer).
	ErrDuplicateEntry = errors.New("path named twice in layer")
	// ErrDeviceNode: a layer holds a device node and the caller may not
	// create one (not real root).
	ErrDeviceNode = errors.New("device node needs root")
	// ErrUnsupported: a format, media type, compression or tar entry type
	// unionctl does not read.
	ErrUnsupported = errors.New("unsupported")
	// ErrCorrupt: an archive, blob or tar stream is truncated or malformed.
	ErrCorrupt = errors.New("corrupt or truncated data")
	// ErrTooLarge: a layer expands to more bytes than it may (a
	// decompression bomb, or a layer bigger than the free space of the
	// store's filesystem less a reserve).
	ErrTooLarge = errors.New("layer too large")
	// ErrDigestMismatch: content does not hash to the digest that names it
	// (a blob, a layer's diff_id, a config).
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrNotFound: no image, container, layer or volume by that name.
	ErrNotFound = errors.New("not found")
	// ErrAmbiguous: an ID prefix matches more than one object.
	ErrAmbiguous = errors.New("ambiguous ID prefix")
	// ErrInUse: the object is used by another (an image by a container, a
	// volume by a container, a running container).
	ErrInUse = errors.New("in use")
	// ErrExists: an object of that name already exists.
	ErrExists = errors.New("already exists")
	// ErrInvalidReference: an image name or tag that is not NAME[:TAG].
	ErrInvalidReference = errors.New("invalid reference")
	// ErrState: the container is not in a state that allows the operation
	// (start of a running container, mount while running elsewhere, ...).
	ErrState = errors.New("wrong container state")
)

// ErrLazy: the image was pulled with --lazy and some of its layers are
// not complete in the store yet; the operation needs them whole.
var ErrLazy = errors.New("image is pulled lazily and not complete")
