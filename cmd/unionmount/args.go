package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/unionmount/unionmount/internal/lowerlist"
	"github.com/unionmount/unionmount/unionfs"
)

// maxLowers is the most lower layers one mount takes: the kernel's
// OVL_MAX_STACK, so a stack that works with overlayfs works here.
const maxLowers = 500

// readyFDFlag is the hidden flag the daemonizing parent passes to the child
// it re-executes: the number of the fd that carries the readiness report.
const readyFDFlag = "internal-ready-fd"

// Modes of --uring and -o uring=.
const (
	uringOff  = "off"  // requests come through read(2) on /dev/fuse
	uringAuto = "auto" // FUSE over io_uring when the kernel offers it
	uringOn   = "on"   // FUSE over io_uring, or no mount
)

// Defaults of the flags; the -o form starts from the same values.
const (
	defaultTimeout      = unionfs.DefaultTimeout
	defaultCacheEntries = int64(1 << 20)
)

// usageError is a problem with the command line or with the directories it
// names. run exits 2 for it; every other error exits 1.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

// config is everything the command line decides.
type config struct {
	opts       unionfs.Options
	mountpoint string

	foreground bool
	help       bool
	version    bool
	// readyFD is the readiness pipe of a daemon child, -1 otherwise.
	readyFD int
	// cpuProfile is where the serving daemon writes a CPU profile ("": none).
	cpuProfile string
	// uring is how requests reach the daemon: uringOff, uringAuto, uringOn.
	uring string
	// lazyLowers are MNT=STORE/lazy/ID: the lower MNT is a lazy layer of
	// a unionctl store, which the daemon serves there from its TOC before
	// it mounts the union (lazy.go).
	lazyLowers []string

	// ignored lists the -o elements that have no effect, for the debug log.
	ignored []string

	// lowerSrc, upperSrc and workSrc name where a path came from ("--lower"
	// or "-o lowerdir"), so that errors name the flag the user typed.
	lowerSrc, upperSrc, workSrc string
}

// flagValues holds what pflag parses, before the -o strings are merged in.
type flagValues struct {
	lower, upper, workdir string
	options               []string
	foreground, debug     bool
	timeout               time.Duration
	allowOther            bool
	cacheEntries          int64
	maxDirFds             int
	noPassthrough         bool
	lowerPassthrough      bool
	volatile              bool
	version, help         bool
	readyFD               int
	cpuProfile            string
	uring                 string
	lazyLowers            []string
}

// newFlagSet declares the flags; parseArgs and the usage text share it.
func newFlagSet(v *flagValues) *pflag.FlagSet {
	fs := pflag.NewFlagSet("unionmount", pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // run prints errors and usage itself
	fs.Usage = func() {}
	fs.SortFlags = false
	fs.StringVar(&v.lower, "lower", "", "read-only `DIRS`, colon separated, leftmost on top (\\: and \\\\ escape)")
	fs.StringVar(&v.upper, "upper", "", "writable `DIR`; without it the mount is read-only")
	fs.StringVar(&v.workdir, "workdir", "", "scratch `DIR` on the upper's filesystem (required with --upper)")
	fs.StringArrayVarP(&v.options, "options", "o", nil, "fuse-overlayfs style `OPTS`, comma separated (see below); may repeat")
	fs.BoolVarP(&v.foreground, "foreground", "f", false, "serve in the foreground until unmounted instead of daemonizing")
	fs.BoolVar(&v.debug, "debug", false, "trace FUSE operations to stderr (kept by the daemon too)")
	fs.DurationVar(&v.timeout, "timeout", defaultTimeout, "kernel entry, attribute and negative-lookup cache `TIMEOUT`")
	fs.BoolVar(&v.allowOther, "allow-other", false, "let other users access the mount (always on as root)")
	fs.Int64Var(&v.cacheEntries, "cache-entries", defaultCacheEntries, "size of the lower-directory lookup cache in `ENTRIES`; 0 disables it")
	fs.IntVar(&v.maxDirFds, "max-dir-fds", 0, "keep at most `N` directory descriptors open, reopening others as needed (0: "+strconv.Itoa(unionfs.DefaultMaxDirFds)+", less under a low RLIMIT_NOFILE)")
	fs.BoolVar(&v.noPassthrough, "no-passthrough", false, "never use FUSE passthrough for upper files")
	fs.BoolVar(&v.lowerPassthrough, "lower-passthrough", false, "also read lower files by passthrough (handles opened before a copy-up keep the lower file)")
	fs.BoolVar(&v.volatile, "volatile", false, "skip fsync on copy-up (the upper may be lost on a crash)")
	fs.StringVar(&v.uring, "uring", uringOff, "serve requests over FUSE-over-io_uring: `MODE` off (read /dev/fuse), auto (io_uring when the kernel offers it, else /dev/fuse) or on (fail to mount without it)")
	fs.StringVar(&v.cpuProfile, "cpuprofile", "", "write a pprof CPU profile of the daemon to `FILE` when it exits")
	fs.StringArrayVar(&v.lazyLowers, "lazy-lower", nil, "`MNT=STORE/lazy/ID`: the lower MNT is the lazy layer ID of a unionctl store, which the daemon serves there itself from the layer's eStargz TOC, fetching file contents from the registry on first read (set by unionctl)")
	fs.BoolVar(&v.version, "version", false, "print the version and exit")
	fs.BoolVarP(&v.help, "help", "h", false, "print this help and exit")
	fs.IntVar(&v.readyFD, readyFDFlag, -1, "readiness pipe of a daemon child (internal)")
	_ = fs.MarkHidden(readyFDFlag)
	return fs
}

// parseArgs turns the arguments (without the program name) into a config.
// It is pure: nothing here touches the filesystem; validate does that.
func parseArgs(args []string) (config, error) {
	var v flagValues
	fs := newFlagSet(&v)
	if err := fs.Parse(args); err != nil {
		return config{}, usagef("%v; see unionmount --help", err)
	}
	cfg := config{readyFD: v.readyFD, help: v.help, version: v.version}
	if cfg.help || cfg.version {
		return cfg, nil
	}

	mo := newMountOpts()
	for _, s := range v.options {
		if err := mo.parse(s); err != nil {
			return config{}, err
		}
	}
	if err := mo.conflicts(fs); err != nil {
		return config{}, err
	}

	if n := fs.NArg(); n != 1 {
		return config{}, usagef("expected one MOUNTPOINT operand, got %d (%s); see unionmount --help",
			n, quoteAll(fs.Args()))
	}
	cfg.mountpoint = fs.Arg(0)
	cfg.foreground = v.foreground
	cfg.cpuProfile = v.cpuProfile
	cfg.uring = v.uring
	if mo.uring != "" {
		cfg.uring = mo.uring
	}
	switch cfg.uring {
	case uringOff, uringAuto, uringOn:
	default:
		return config{}, usagef("--uring %q: not a mode; pass off, auto or on", cfg.uring)
	}
	cfg.lazyLowers = v.lazyLowers

	// Layers.
	cfg.lowerSrc, cfg.upperSrc, cfg.workSrc = "--lower", "--upper", "--workdir"
	lowers := []string(nil)
	switch {
	case mo.lowerSet:
		cfg.lowerSrc = "-o lowerdir"
		lowers = mo.lowers
	case fs.Changed("lower"):
		l, err := lowerlist.Split(v.lower)
		if err != nil {
			return config{}, usagef("--lower %q: %v", v.lower, err)
		}
		lowers = l
	default:
		return config{}, usagef("no lower directory given; pass --lower DIR[:DIR...] or -o lowerdir=DIR[:DIR...]")
	}
	if len(lowers) > maxLowers {
		return config{}, usagef("%s: %d layers given, at most %d are supported; merge some layers",
			cfg.lowerSrc, len(lowers), maxLowers)
	}
	upper, workdir := v.upper, v.workdir
	if mo.upper != nil {
		upper, cfg.upperSrc = *mo.upper, "-o upperdir"
	}
	if mo.workdir != nil {
		workdir, cfg.workSrc = *mo.workdir, "-o workdir"
	}
	if mo.ro { // a read-only mount has no upper, whatever else was said
		upper, workdir = "", ""
	}
	if upper != "" && workdir == "" {
		return config{}, usagef("%s given without %s; pass a workdir on the upper's filesystem",
			cfg.upperSrc, workFlagFor(cfg.upperSrc))
	}
	if workdir != "" && upper == "" {
		return config{}, usagef("%s given without %s; pass an upper too, or drop the workdir",
			cfg.workSrc, upperFlagFor(cfg.workSrc))
	}

	// Caching.
	timeout := v.timeout
	if mo.timeout != nil {
		timeout = *mo.timeout
	}
	if timeout < 0 {
		return config{}, usagef("--timeout %v: negative; pass a duration >= 0 such as 1h or 0", timeout)
	}
	if v.cacheEntries < 0 {
		return config{}, usagef("--cache-entries %d: negative; pass a count >= 0 (0 disables the cache)", v.cacheEntries)
	}
	if v.maxDirFds < 0 {
		return config{}, usagef("--max-dir-fds %d: negative; pass a count >= 1, or 0 for the default", v.maxDirFds)
	}

	cfg.ignored = mo.ignored
	cfg.opts = unionfs.Options{
		Lowers:             lowers,
		Upper:              upper,
		Workdir:            workdir,
		EntryTimeout:       timeout,
		AttrTimeout:        timeout,
		NegativeTimeout:    timeout,
		LookupCacheEntries: v.cacheEntries,
		MaxDirFds:          v.maxDirFds,
		NoFsync:            v.volatile || mo.noFsync,
		Rootless:           mo.userxattr, // validate adds the euid and user namespace
		Passthrough:        !v.noPassthrough,
		LowerPassthrough:   v.lowerPassthrough && !v.noPassthrough,
		UIDMap:             mo.uidMap,
		GIDMap:             mo.gidMap,
		SquashUID:          mo.squashUID,
		SquashGID:          mo.squashGID,
		AllowOther:         v.allowOther || mo.allowOther,
		Debug:              v.debug || mo.debug,
		FsName:             mo.fsName,
		IoUring:            cfg.uring != uringOff,
	}
	return cfg, nil
}

func workFlagFor(upperSrc string) string {
	if strings.HasPrefix(upperSrc, "-o") {
		return "workdir="
	}
	return "--workdir"
}

func upperFlagFor(workSrc string) string {
	if strings.HasPrefix(workSrc, "-o") {
		return "upperdir="
	}
	return "--upper"
}

func quoteAll(ss []string) string {
	if len(ss) == 0 {
		return "none"
	}
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, " ")
}

// mountOpts accumulates what the -o strings say. Pointer fields are nil
// when the option was not given, so conflicts with flags can be told.
type mountOpts struct {
	lowerSet       bool
	lowers         []string
	upper, workdir *string
	timeout        *time.Duration
	noFsync        bool
	allowOther     bool
	ro             bool
	debug          bool
	userxattr      bool
	uidMap, gidMap []unionfs.IDMap
	squashUID      int64
	squashGID      int64
	fsName         string
	uring          string
	ignored        []string
}

func newMountOpts() *mountOpts {
	return &mountOpts{squashUID: -1, squashGID: -1}
}

// parse merges one -o string: comma separated elements, empty ones
// allowed; a value may be double-quoted (and then hold commas) and a
// backslash escapes the next character (kept for the value parsers, as the
// kernel's ovl_next_opt does).
func (m *mountOpts) parse(s string) error {
	elems, err := splitOptions(s)
	if err != nil {
		return usagef("-o %q: %v", s, err)
	}
	for _, e := range elems {
		if err := m.apply(e); err != nil {
			return err
		}
	}
	return nil
}

func (m *mountOpts) apply(elem string) error {
	key, val, hasVal := strings.Cut(elem, "=")
	val = unquote(val)
	need := func(form string) error {
		if !hasVal || val == "" {
			return usagef("-o %s: missing value; pass %s", key, form)
		}
		return nil
	}
	switch key {
	case "lowerdir":
		if err := need("lowerdir=DIR[:DIR...]"); err != nil {
			return err
		}
		if m.lowerSet {
			return usagef("-o lowerdir given twice; pass it once")
		}
		l, err := lowerlist.Split(val)
		if err != nil {
			return usagef("-o lowerdir %q: %v", val, err)
		}
		m.lowers, m.lowerSet = l, true
	case "upperdir", "workdir":
		if err := need(key + "=DIR"); err != nil {
			return err
		}
		dst := &m.upper
		if key == "workdir" {
			dst = &m.workdir
		}
		if *dst != nil {
			return usagef("-o %s given twice; pass it once", key)
		}
		p, err := unescape(val)
		if err != nil {
			return usagef("-o %s %q: %v", key, val, err)
		}
		*dst = &p
	case "lowerdir+", "datadir+":
		return usagef("-o %s=: not supported; pass all lowers at once as lowerdir=DIR[:DIR...]", key)
	case "volatile":
		m.noFsync = true
	case "fsync":
		switch val {
		case "0":
			m.noFsync = true
		case "1":
			m.noFsync = false
		default:
			return usagef("-o fsync=%s: not 0 or 1; pass fsync=0 or fsync=1", val)
		}
	case "uidmapping", "gidmapping":
		if err := need(key + "=:LAYER:MOUNT:COUNT[:...]"); err != nil {
			return err
		}
		maps, err := parseIDMapping(val)
		if err != nil {
			return usagef("-o %s=%s: %v", key, val, err)
		}
		if key == "uidmapping" {
			m.uidMap = maps
		} else {
			m.gidMap = maps
		}
	case "squash_to_uid", "squash_to_gid":
		id, err := strconv.ParseUint(val, 10, 32)
		if err != nil {
			return usagef("-o %s=%s: not an id; pass a number from 0 to %d", key, val, uint32(1<<32-1))
		}
		if key == "squash_to_uid" {
			m.squashUID = int64(id)
		} else {
			m.squashGID = int64(id)
		}
	case "squash_to_root":
		m.squashUID, m.squashGID = 0, 0
	case "allow_other":
		m.allowOther = true
	case "ro":
		m.ro = true
	case "debug":
		m.debug = true
	case "userxattr":
		m.userxattr = true
	case "timeout":
		secs, err := strconv.ParseFloat(val, 64)
		if err != nil || !(secs >= 0 && secs <= 1e9) { // also refuses NaN
			return usagef("-o timeout=%s: not a number of seconds; pass a number >= 0", val)
		}
		d := time.Duration(secs * float64(time.Second))
		m.timeout = &d
	case "fsname":
		m.fsName = val
	case "uring":
		if err := need("uring=off|auto|on"); err != nil {
			return err
		}
		m.uring = val
	default:
		// rw, suid, dev, exec, noatime, context="...", xattr_permissions=2,
		// metacopy=, redirect_dir=, index=, xino=, ...: nothing to do.
		m.ignored = append(m.ignored, elem)
	}
	return nil
}

// conflicts reports a value given both as a flag and in -o.
func (m *mountOpts) conflicts(fs *pflag.FlagSet) error {
	for _, c := range []struct {
		flag, opt string
		inOpt     bool
	}{
		{"lower", "lowerdir=", m.lowerSet},
		{"upper", "upperdir=", m.upper != nil},
		{"workdir", "workdir=", m.workdir != nil},
		{"timeout", "timeout=", m.timeout != nil},
		{"uring", "uring=", m.uring != ""},
	} {
		if c.inOpt && fs.Changed(c.flag) {
			return usagef("--%s and -o %s both given; pass one of them", c.flag, c.opt)
		}
	}
	return nil
}

// splitOptions splits a -o string at commas that are neither inside double
// quotes nor escaped by a backslash, dropping empty elements. Quotes and
// backslashes stay in the elements.
func splitOptions(s string) ([]string, error) {
	var out []string
	start, inQuote := 0, false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++ // the next character is literal, whatever it is
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				if i > start {
					out = append(out, s[start:i])
				}
				start = i + 1
			}
		}
	}
	if inQuote {
		return nil, errors.New("unterminated double quote; close it or escape it as \\\"")
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out, nil
}

// unquote strips one pair of double quotes around a whole value.
func unquote(v string) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return v[1 : len(v)-1]
	}
	return v
}

// unescape drops each escaping backslash, as the kernel's ovl_unescape.
func unescape(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			if i+1 == len(s) {
				return "", errors.New(`ends in a lone backslash; escape it as \\`)
			}
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String(), nil
}

// parseIDMapping parses a fuse-overlayfs id mapping, LAYER:MOUNT:COUNT
// triples joined by colons, with or without the leading colon podman
// writes. containers/storage calls the first number the container id and
// the second the host id: files it stores with id LAYER+i (unshifted, as in
// the image) are shown as MOUNT+i (the host id the container's user
// namespace maps), as fuse-overlayfs does. unionfs.IDMap names the same two
// sides Host (in the layers) and Container (in the mount).
func parseIDMapping(s string) ([]unionfs.IDMap, error) {
	s = strings.TrimPrefix(s, ":")
	parts := strings.Split(s, ":")
	if s == "" || len(parts)%3 != 0 {
		return nil, errors.New("not LAYER:MOUNT:COUNT triples; join them with colons, e.g. :0:100000:65536")
	}
	var maps []unionfs.IDMap
	for i := 0; i < len(parts); i += 3 {
		var n [3]uint64
		for j := range n {
			v, err := strconv.ParseUint(parts[i+j], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("%q is not an id; use numbers from 0 to %d", parts[i+j], uint32(1<<32-1))
			}
			n[j] = v
		}
		layer, mount, count := n[0], n[1], n[2]
		if count == 0 {
			return nil, fmt.Errorf("range %d:%d:0 is empty; give a count > 0", layer, mount)
		}
		if layer+count > 1<<32 || mount+count > 1<<32 {
			return nil, fmt.Errorf("range %d:%d:%d passes the largest id %d; shorten it",
				layer, mount, count, uint32(1<<32-1))
		}
		maps = append(maps, unionfs.IDMap{Container: uint32(mount), Host: uint32(layer), Size: uint32(count)})
	}
	return maps, nil
}
