package rules

import (
	"errors"

	"github.com/unionmount/unionmount/copyup"
	"github.com/unionmount/unionmount/whiteout"
	"golang.org/x/sys/unix"
)

// CopyUp copies the lower entry src into the upper directory dir under
// the same name (ovl_copy_up_one), built in the workdir and moved into
// place whole (package copyup). st is the entry's lstat.
//
// Order: dir must be the upper copy of src's directory, so a copy-up goes
// parents first, from the topmost directory the upper lacks down to the
// entry (ovl_copy_up_flags); unionfs walks the links of its nodes that
// way, taking each node's copy-up lock. A name the upper already holds is
// taken as the copy (EEXIST is not an error): this entry's copy, made by a
// copy-up that raced this one or an earlier mount. Unless it is a whiteout
// or of another type: then the name was removed or replaced while the copy
// ran, and the copy-up fails with ENOENT, the kernel's answer for a name
// that went, rather than adopt what holds the name now.
func (u *Upper) CopyUp(src copyup.Source, dir int, opts copyup.Options) error {
	err := copyup.Entry(src, dir, src.Name, u.Work, opts)
	if err == nil || !errors.Is(err, unix.EEXIST) {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dir, src.Name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if whiteout.IsCharWhiteout(&st) || st.Mode&unix.S_IFMT != src.Stat.Mode&unix.S_IFMT {
		return unix.ENOENT
	}
	return nil
}
