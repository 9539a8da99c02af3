package rules

import (
	"strconv"
	"sync/atomic"

	"github.com/unionmount/unionmount/internal/rmtree"
	"github.com/unionmount/unionmount/whiteout"
	"golang.org/x/sys/unix"
)

// Upper is the writable layer as the rules change it.
type Upper struct {
	// Work is a descriptor of the workdir (opened for reading, not
	// O_PATH), on the upper's filesystem.
	Work int
	// Format writes whiteouts and opaque markers: trusted.overlay.* as
	// root, user.overlay.* rootless.
	Format whiteout.Format
	// Logf reports a cleanup that failed after the operation itself
	// stood (a temp left in the workdir, which the next mount removes).
	// Nil: not reported.
	Logf func(format string, args ...any)
}

func (u *Upper) logf(format string, args ...any) {
	if u.Logf != nil {
		u.Logf(format, args...)
	}
}

// Entry is what the union shows at one name, as the rules need it; the
// caller's lookup finds it.
type Entry struct {
	// Dir: the topmost entry is a directory.
	Dir bool
	// Upper: the topmost entry is in the upper layer.
	Upper bool
	// Merged: a directory whose topmost entry merges with a directory
	// below it (not opaque).
	Merged bool
	// Lower: a lower layer shows the name (under the upper entry, if
	// there is one). Removal asks only when Upper: a lower topmost entry
	// always needs a whiteout.
	Lower bool
}

// Movable reports whether rename can move the entry: anything but a
// directory with a lower part, which would need a redirect
// (ovl_can_move with redirect_dir=off).
func (e Entry) Movable() bool { return !e.Dir || (e.Upper && !e.Merged) }

// NeedsWhiteout reports whether taking the name out of the upper must
// leave a whiteout: a lower layer would show it again otherwise
// (ovl_lower_positive).
func (e Entry) NeedsWhiteout() bool { return !e.Upper || e.Lower }

var tmpCounter atomic.Uint64

// TempName is a name in the workdir no other operation of this process
// uses at the same time.
func TempName() string {
	return "#unionmount-tmp-" + strconv.Itoa(unix.Getpid()) + "-" + strconv.FormatUint(tmpCounter.Add(1), 10)
}

// SetOpaque marks the directory name of dir opaque with the format's
// marker.
func (u *Upper) SetOpaque(dir int, name string) error {
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return u.Format.SetOpaque(fd)
}

// swapIn replaces the entry dir/name in one RENAME_EXCHANGE with one that
// make builds, complete, at (u.Work, a temp name), then removes what it
// replaced from the workdir (ovl_create_over_whiteout, ovl_clear_empty):
// a crash shows the old entry or the new one, never neither.
func (u *Upper) swapIn(dir int, name string, make Maker) error {
	tmp := TempName()
	err := make(u.Work, tmp)
	if err == nil {
		err = unix.Renameat2(u.Work, tmp, dir, name, unix.RENAME_EXCHANGE)
	}
	// tmp is what was at name now, or the unused new entry.
	if rerr := rmtree.RemoveAt(u.Work, tmp); rerr != nil {
		u.logf("remove %q from the workdir: %v", tmp, rerr)
	}
	return err
}

// dropAUFSWhiteout removes a ".wh.NAME" beside NAME in the upper
// directory dir, if there is one.
func dropAUFSWhiteout(dir int, name string) error {
	if err := unix.Unlinkat(dir, whiteout.Prefix+name, 0); err != nil && err != unix.ENOENT {
		return err
	}
	return nil
}
