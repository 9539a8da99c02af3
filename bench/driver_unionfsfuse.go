package bench

import (
	"fmt"
	"path/filepath"
	"strings"
)

// unionfsFuse is unionfs-fuse in copy-on-write mode. It keeps its own
// whiteout format (a .unionfs metadata dir in the upper), so it is only
// comparable on data without whiteouts, which is all the datasets have:
// it runs every case, and the result checks agree (unionfs-fuse 1.0). It
// runs whenever it is installed.
type unionfsFuse struct{}

func init() { register(unionfsFuse{}) }

func (unionfsFuse) Name() string { return "unionfs-fuse" }

func (unionfsFuse) bin(env *Env) (string, error) {
	return lookBinary(env.Cfg.UnionfsFuseBin, "unionfs-fuse", "unionfs")
}

func (d unionfsFuse) Check(env *Env) error {
	if err := needFUSE(); err != nil {
		return err
	}
	if _, err := d.bin(env); err != nil {
		return fmt.Errorf("%w; install the unionfs-fuse package to include it", err)
	}
	return nil
}

func (d unionfsFuse) Version(env *Env) string {
	bin, err := d.bin(env)
	if err != nil {
		return ""
	}
	return versionOf(bin, "unionfs-fuse version", "--version")
}

func (d unionfsFuse) Mount(env *Env, st Stack, mnt string) (*Mount, error) {
	bin, err := d.bin(env)
	if err != nil {
		return nil, err
	}
	branches := []string{st.Upper + "=RW"}
	for _, l := range st.Lowers {
		if strings.ContainsAny(l, ":=") {
			return nil, fmt.Errorf("unionfs-fuse: path %q holds ':' or '='; use another --data directory", l)
		}
		branches = append(branches, l+"=RO")
	}
	argv := []string{bin, "-f", "-o", "cow,hide_meta_files", strings.Join(branches, ":"), mnt}
	dm, err := startDaemon(d.Name(), argv, mnt, filepath.Join(env.logs, d.Name()+".log"))
	if err != nil {
		return nil, err
	}
	return &Mount{Dir: mnt, daemon: dm}, nil
}
