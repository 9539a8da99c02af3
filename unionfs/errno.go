package unionfs

import (
	"errors"
	"syscall"
)

// errno maps an error to the errno the caller sees. It is the one place
// errors cross the FUSE boundary: a syscall errno anywhere in the chain is
// returned as is; anything else is logged and becomes EIO.
func (u *unionFS) errno(op, rel string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	u.log.Printf("%s %q: %v", op, rel, err)
	return syscall.EIO
}
