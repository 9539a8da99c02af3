package unionfs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	dev := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMountinfo(fields[4]) == abs {
			dev = fields[2] // the last (topmost) mount at that point wins
		}
	}
	if dev == "" {
		return fmt.Errorf("%s not in mountinfo", abs)
	}
	return os.WriteFile("/sys/class/bdi/"+dev+"/read_ahead_kb", []byte(fmt.Sprint(kb)), 0)
}

// unescapeMountinfo undoes the octal escapes (\040 for space...) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
