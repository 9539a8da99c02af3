package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/unionmount/unionmount/internal/mountinfo"
)

// A mountinfo as containers-storage leaves it while it runs the mount
// program for `podman run --uidmap`: the storage directory is on the root
// filesystem (id 26) and idmapped at .../ID/mapped/0 (id 44).
const storageMountinfo = `26 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
42 26 254:0 /var/lib/containers/storage/overlay /var/lib/containers/storage/overlay rw,relatime - ext4 /dev/vda rw
44 42 254:0 /var/lib/containers/storage/overlay /var/lib/containers/storage/overlay/ID/mapped/0 rw,relatime,idmapped - ext4 /dev/vda rw
50 26 0:40 / /mnt/with\040space rw,relatime - tmpfs tmpfs rw
`

func TestBypassIDMapped(t *testing.T) {
	mounts, err := mountinfo.Parse(strings.NewReader(storageMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	const (
		mapped = "/var/lib/containers/storage/overlay/ID/mapped/0/LAYER/diff"
		plain  = "/var/lib/containers/storage/overlay/LAYER/diff"
	)
	// What statx would say: paths under mapped/0 are on mount 44, the
	// storage directory on 42, the rest on 26.
	mntID := func(p string) (uint64, error) {
		switch {
		case strings.HasPrefix(p, "/var/lib/containers/storage/overlay/ID/mapped/0/"):
			return 44, nil
		case strings.HasPrefix(p, "/var/lib/containers/storage/overlay/"):
			return 42, nil
		case strings.HasPrefix(p, "/missing"):
			return 0, errors.New("no such file")
		}
		return 26, nil
	}
	same := func(a, b string) bool { return a == mapped && b == plain }

	got, err := bypassIDMapped(mapped, mounts, mntID, same)
	if err != nil || got != plain {
		t.Errorf("bypassIDMapped(mapped lower) = %q, %v; want %q", got, err, plain)
	}
	if got, err := bypassIDMapped("/srv/layer", mounts, mntID, same); err != nil || got != "/srv/layer" {
		t.Errorf("bypassIDMapped(plain lower) = %q, %v; want it unchanged", got, err)
	}
	// The same directory is not found through any plain mount.
	if _, err := bypassIDMapped(mapped, mounts, mntID, func(a, b string) bool { return false }); !errors.Is(err, errNoPlainMount) {
		t.Errorf("bypassIDMapped without a way around = %v; want errNoPlainMount", err)
	}
	if _, err := bypassIDMapped("/missing", mounts, mntID, same); err == nil {
		t.Errorf("bypassIDMapped(missing path): no error")
	}
}

// TestBypassIDMappedLowersOnlyWithIDOptions: without id options a lower
// stays as given, idmapped or not; the kernel's mapping is then the only
// one.
func TestBypassIDMappedLowersOnlyWithIDOptions(t *testing.T) {
	cfg, err := parseArgs([]string{"-o", "lowerdir=/nonexistent/idmapped", "/mnt"})
	if err != nil {
		t.Fatal(err)
	}
	if err := bypassIDMappedLowers(&cfg); err != nil || cfg.opts.Lowers[0] != "/nonexistent/idmapped" {
		t.Errorf("bypassIDMappedLowers without id options: %v, lowers %q", err, cfg.opts.Lowers)
	}
}
