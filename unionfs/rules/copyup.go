package rules

import (
	"errors"

	"github.com/unionmount/unionmount/copyup"
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
// taken as the copy (EEXIST is not an error): it can only be this entry's
// copy, made by a copy-up that raced this one or an earlier mount.
func (u *Upper) CopyUp(src copyup.Source, dir int, opts copyup.Options) error {
	err := copyup.Entry(src, dir, src.Name, u.Work, opts)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}
