package bench

import (
	"fmt"
	"os"
	"strings"
)

// uringParam is the kernel's switch of FUSE over io_uring (Linux 6.14+).
const uringParam = "/sys/module/fuse/parameters/enable_uring"

// unionmountURing is unionmount serving over FUSE over io_uring
// (--uring on) rather than read(2) on /dev/fuse: the transport's own
// cost shows against the unionmount driver. It runs the cases made of
// many small requests (not go-tree, for make bench's time budget); the
// data cases would repeat unionmount's figures.
type unionmountURing struct{ unionmount }

func init() {
	register(unionmountURing{unionmount{name: "unionmount-uring", extra: []string{"--uring", "on"},
		cases: []string{"requests", "walk", "negative-lookup", "readdir-stat", "churn"}}})
}

func (d unionmountURing) Check(env *Env) error {
	if err := d.unionmount.Check(env); err != nil {
		return err
	}
	b, err := os.ReadFile(uringParam)
	if err != nil {
		return fmt.Errorf("this kernel has no FUSE over io_uring (%v; Linux 6.14+ with CONFIG_FUSE_IO_URING)", err)
	}
	if strings.TrimSpace(string(b)) != "Y" {
		return fmt.Errorf("FUSE over io_uring is off: as root, echo Y > %s (make bench does, and restores it)", uringParam)
	}
	return nil
}
