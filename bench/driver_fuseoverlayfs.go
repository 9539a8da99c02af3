package bench

import (
	"fmt"
	"path/filepath"
	"strings"
)

// fuseOverlayfs is fuse-overlayfs with its defaults, the FUSE overlay that
// rootless podman uses: the userspace baseline.
type fuseOverlayfs struct{}

func init() { register(fuseOverlayfs{}) }

func (fuseOverlayfs) Name() string { return "fuse-overlayfs" }

func (fuseOverlayfs) Check(env *Env) error {
	if err := needFUSE(); err != nil {
		return err
	}
	if _, err := lookBinary(env.Cfg.FuseOverlayfsBin, "fuse-overlayfs"); err != nil {
		return fmt.Errorf("%w; install the fuse-overlayfs package", err)
	}
	return nil
}

func (fuseOverlayfs) Version(env *Env) string {
	bin, err := lookBinary(env.Cfg.FuseOverlayfsBin, "fuse-overlayfs")
	if err != nil {
		return ""
	}
	return versionOf(bin, "fuse-overlayfs: version", "--version")
}

func (d fuseOverlayfs) Mount(env *Env, st Stack, mnt string) (*Mount, error) {
	bin, err := lookBinary(env.Cfg.FuseOverlayfsBin, "fuse-overlayfs")
	if err != nil {
		return nil, err
	}
	for _, p := range append([]string{st.Upper, st.Work}, st.Lowers...) {
		if strings.ContainsAny(p, ",:") {
			return nil, fmt.Errorf("fuse-overlayfs: path %q holds ',' or ':'; use another --data directory", p)
		}
	}
	opts := "lowerdir=" + strings.Join(st.Lowers, ":") + ",upperdir=" + st.Upper + ",workdir=" + st.Work
	argv := []string{bin, "-f", "-o", opts, mnt}
	dm, err := startDaemon(d.Name(), argv, mnt, filepath.Join(env.logs, d.Name()+".log"))
	if err != nil {
		return nil, err
	}
	return &Mount{Dir: mnt, daemon: dm}, nil
}
