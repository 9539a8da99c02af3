package bench

import (
	"os"
	"runtime"
	"strings"

	"github.com/unionmount/unionmount/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// Machine describes where the numbers were taken.
type Machine struct {
	Kernel  string `json:"kernel"`
	CPU     string `json:"cpu"`
	CPUs    int    `json:"cpus"`
	MemGiB  int    `json:"mem_gib"`
	Go      string `json:"go"`
	Load    string `json:"loadavg"` // at the start: other work on the machine adds noise
	DataFS  string `json:"data_fs,omitempty"`
	Started string `json:"-"`
}

func probeMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		m.MemGiB = int((uint64(si.Totalram)*uint64(si.Unit) + 1<<29) >> 30)
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.Load = strings.Join(f[:3], " ")
		}
	}
	return m
}

// fsType names the filesystem holding path (from /proc/self/mountinfo:
// the longest mount point that is a prefix of it).
func fsType(path string) string {
	mounts, err := mountinfo.Self()
	if err != nil {
		return ""
	}
	best, typ := -1, ""
	for _, m := range mounts {
		mp := m.Mountpoint
		if (path == mp || strings.HasPrefix(path, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > best {
			best, typ = len(mp), m.FSType
		}
	}
	return typ
}
