package unionfs

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/unionmount/unionmount/internal/mountinfo"
)

// DefaultReadAheadKB is the kernel read-ahead we ask for on our mount.
// Lower files are read through the daemon, and the kernel's default for
// FUSE (128 KiB) makes a sequential read one round trip per 128 KiB; with
// 1 MiB (our max_pages) it is one per MiB. Random reads are unaffected: the
// kernel grows the window only for sequential access.
const DefaultReadAheadKB = 1024

// setReadAhead sets read_ahead_kb of the mount's backing device info,
// found through /proc/self/mountinfo (never by touching the mount, which
// this process serves). Best effort: it needs root.
func setReadAhead(mountpoint string, kb int) error {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return err
	}
	mounts, err := mountinfo.Self()
	if err != nil {
		return err
	}
	on := mountinfo.On(mounts, abs)
	if len(on) == 0 {
		return fmt.Errorf("%s not in mountinfo", abs)
	}
	dev := on[len(on)-1].Dev // the topmost mount at that point
	return os.WriteFile("/sys/class/bdi/"+dev+"/read_ahead_kb", []byte(fmt.Sprint(kb)), 0)
}
