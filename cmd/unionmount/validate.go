package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/unionmount/unionmount/internal/mountinfo"
)

// validate checks the directories a parsed config names, replaces every
// path by its absolute real path (lowers may be symlinks, as in podman's
// l/ directory) and fills the options that depend on who runs us. Every
// error is a usageError naming the flag and the fix.
func validate(cfg *config) error {
	o := &cfg.opts
	lowers := make([]string, len(o.Lowers))
	for i, l := range o.Lowers {
		p, err := resolveDir(cfg.lowerSrc, l, "pass existing directories")
		if err != nil {
			return err
		}
		lowers[i] = p
	}
	o.Lowers = lowers
	if err := bypassIDMappedLowers(cfg); err != nil {
		return err
	}

	if o.Upper != "" {
		upper, err := resolveDir(cfg.upperSrc, o.Upper, "create it or pass an existing directory")
		if err != nil {
			return err
		}
		work, err := resolveDir(cfg.workSrc, o.Workdir, "create it on the upper's filesystem")
		if err != nil {
			return err
		}
		if err := checkUpper(cfg, upper, work); err != nil {
			return err
		}
		o.Upper, o.Workdir = upper, work
	}

	mnt, err := resolveDir("MOUNTPOINT", cfg.mountpoint, "create it first")
	if err != nil {
		return err
	}
	if err := checkMountpoint(cfg, mnt); err != nil {
		return err
	}
	cfg.mountpoint = mnt

	applyIdentity(cfg, os.Geteuid(), inUserNamespace())
	return nil
}

// resolveDir returns the absolute real path of the directory p.
func resolveDir(src, p, fix string) (string, error) {
	abs, err := filepath.Abs(p)
	resolved := abs
	if err == nil {
		resolved, err = filepath.EvalSymlinks(abs)
	}
	var st os.FileInfo
	if err == nil {
		st, err = os.Stat(resolved)
	}
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return "", usagef("%s %q: a FUSE mount whose daemon is gone; unmount it with fusermount3 -u -z %s",
			src, p, abs)
	case errors.Is(err, fs.ErrNotExist):
		return "", usagef("%s %q: no such directory; %s", src, p, fix)
	case errors.Is(err, syscall.ENOTDIR) || err == nil && !st.IsDir():
		return "", usagef("%s %q: not a directory; %s", src, p, fix)
	case err != nil:
		return "", usagef("%s %q: %v; %s", src, p, err, fix)
	}
	return resolved, nil
}

// checkUpper applies the kernel's rules for upperdir and workdir: the
// workdir is on the upper's filesystem (copy-up renames from it into the
// upper) and no two of upper, workdir and the lowers nest.
func checkUpper(cfg *config, upper, work string) error {
	ust, err := os.Stat(upper)
	if err != nil {
		return usagef("%s %q: %v", cfg.upperSrc, upper, err)
	}
	wst, err := os.Stat(work)
	if err != nil {
		return usagef("%s %q: %v", cfg.workSrc, work, err)
	}
	if devOf(ust) != devOf(wst) {
		return usagef("%s %q: not on the filesystem of %s %q; pick a workdir on the upper's filesystem",
			cfg.workSrc, work, cfg.upperSrc, upper)
	}
	if within(work, upper) {
		return usagef("%s %q: inside %s %q; use a directory beside the upper, not in it",
			cfg.workSrc, work, cfg.upperSrc, upper)
	}
	if within(upper, work) {
		return usagef("%s %q: inside %s %q; use a workdir beside the upper, not around it",
			cfg.upperSrc, upper, cfg.workSrc, work)
	}
	for _, l := range cfg.opts.Lowers {
		for _, d := range []struct{ src, path string }{{cfg.upperSrc, upper}, {cfg.workSrc, work}} {
			if within(d.path, l) {
				return usagef("%s %q: inside %s %q; keep the upper and workdir out of the lowers",
					d.src, d.path, cfg.lowerSrc, l)
			}
			if within(l, d.path) {
				return usagef("%s %q: inside %s %q; keep the lowers out of the upper and workdir",
					cfg.lowerSrc, l, d.src, d.path)
			}
		}
	}
	return nil
}

// checkMountpoint refuses a mount point that is already mounted on, or
// that lies inside a layer: the daemon would then meet its own mount while
// reading that layer.
func checkMountpoint(cfg *config, mnt string) error {
	layers := []struct{ src, path string }{{cfg.upperSrc, cfg.opts.Upper}, {cfg.workSrc, cfg.opts.Workdir}}
	for _, l := range cfg.opts.Lowers {
		layers = append(layers, struct{ src, path string }{cfg.lowerSrc, l})
	}
	for _, l := range layers {
		if l.path != "" && l.path != mnt && within(mnt, l.path) {
			return usagef("MOUNTPOINT %q: inside %s %q; mount outside the layers", mnt, l.src, l.path)
		}
	}
	// Without /proc (an error here) the mount itself decides.
	if mounted, err := mountinfo.IsMountpoint(mnt); err == nil && mounted {
		return usagef("MOUNTPOINT %q: already a mount point; unmount it first (fusermount3 -u %s) or pick another directory",
			mnt, mnt)
	}
	return nil
}

// within reports whether path is dir or below it; both are clean and
// absolute.
func within(path, dir string) bool {
	if dir == "/" {
		return true
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}

func devOf(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev)
	}
	return 0
}

// applyIdentity fills the options that depend on who runs the mount.
//   - Rootless (user.overlay.* markers) unless we are real root: a
//     namespace root cannot write trusted.* xattrs either. userxattr in -o
//     has already set it.
//   - DirectMount as (namespace) root: mount(2) without fusermount3.
//   - AllowOther as root: every user reaches what the permissions allow,
//     as on a kernel overlay (the kernel checks them: default_permissions),
//     and podman's containers, which run as other users, see the mount.
//     Other users need --allow-other and user_allow_other in
//     /etc/fuse.conf.
func applyIdentity(cfg *config, euid int, inUserNS bool) {
	root := euid == 0
	cfg.opts.Rootless = cfg.opts.Rootless || !root || inUserNS
	cfg.opts.DirectMount = root
	cfg.opts.AllowOther = cfg.opts.AllowOther || root
}

// inUserNamespace reports whether we run in a user namespace other than
// the initial one.
func inUserNamespace() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	return !isInitialIDMap(string(b))
}

// isInitialIDMap reports whether a uid_map is the initial namespace's
// identity map of every id.
func isInitialIDMap(uidMap string) bool {
	f := strings.Fields(uidMap)
	return len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295"
}
