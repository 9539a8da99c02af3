// Command unionmount mounts read-only lower directories and an optional
// writable upper directory as one FUSE filesystem with the semantics of
// Linux overlayfs (kernel defaults: index=off, redirect_dir=off,
// metacopy=off).
//
// It takes two forms:
//
//	unionmount --lower A:B[:C...] [--upper U --workdir W] [flags] MOUNTPOINT
//	unionmount -o lowerdir=A:B,upperdir=U,workdir=W[,opt...] MOUNTPOINT
//
// Lowers are listed leftmost on top, as overlayfs' lowerdir=. In a lower
// list a backslash escapes the next character, so `\:` is a colon inside a
// path and `\\` a backslash. Without an upper the mount is read-only.
//
// The -o form is the contract containers/storage (podman, buildah) uses
// for an overlay `mount_program` such as fuse-overlayfs: the program is
// run as `PROGRAM -o OPTS MOUNTPOINT` from the storage directory; OPTS is
// one comma-joined string in which empty elements may appear, values may
// be double-quoted to hold commas (context="a:b:c1,c2"), lowers may be
// symlinks, and upperdir/workdir are absent for read-only image mounts.
// Understood: lowerdir=, upperdir=, workdir=, volatile, fsync=0,
// uidmapping= and gidmapping= (":LAYER:MOUNT:COUNT..."), squash_to_uid=,
// squash_to_gid=, squash_to_root, allow_other, ro, debug, timeout=SECONDS,
// userxattr, fsname=, uring=off|auto|on. Anything else (xattr_permissions=2, context=...,
// noatime, rw, nodev, ...) is ignored, with a log line under --debug. -o may
// be repeated and mixed with the flags, but a value may not be given both
// ways.
//
// As root (also a user namespace's root, as under rootless podman) both
// forms mount with allow_other, so that every user reaches the files their
// permissions allow, as on a kernel overlay mount (default_permissions is
// always on) and as fuse-overlayfs does for podman's containers.
//
// Before mounting it checks what the host must provide for the caller
// (a usable /dev/fuse; for a user, a setuid fusermount3 and, with
// allow_other, user_allow_other; in a user namespace, a mount namespace of
// its own) and names the fix of what is missing (host.go). With id options,
// a lower reached through an idmapped mount is reached through a plain
// mount of its filesystem instead, so that ids are shifted once
// (idmapped.go: containers-storage of podman 4.3 does both).
//
// Both forms daemonize: the command returns 0 once the mount is up, or
// prints the error and returns 1 (see daemon.go for how the child reports
// readiness). With -f/--foreground it serves until `fusermount3 -u
// MOUNTPOINT` or SIGINT/SIGTERM, then returns 0. Bad arguments return 2
// with a one-line error that names the flag and the fix. `--version`
// prints one line.
package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/pflag"
)

// version is set at build time: go build -ldflags "-X main.version=1.2.3".
var version = "dev"

// Exit statuses.
const (
	exitOK      = 0 // mounted, unmounted cleanly, or help/version printed
	exitFailure = 1 // the mount or the daemon failed
	exitUsage   = 2 // bad arguments or directories
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole command: args without the program name in, exit
// status out.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseArgs(args)
	switch {
	case err != nil:
	case cfg.help:
		fmt.Fprint(stdout, usageText())
		return exitOK
	case cfg.version:
		fmt.Fprintln(stdout, versionLine())
		return exitOK
	default:
		err = start(cfg, args, stderr)
	}
	return exitStatus(stderr, err)
}

// start validates and mounts: in this process with -f, else in a daemon.
func start(cfg config, args []string, stderr io.Writer) error {
	logger := log.New(stderr, "unionmount: ", log.LstdFlags)
	if cfg.readyFD >= 0 {
		return runDaemonChild(cfg, logger)
	}
	if err := validate(&cfg); err != nil {
		return err
	}
	if err := checkHost(&cfg.opts, os.Geteuid(), inUserNamespace(), realHost()); err != nil {
		return err
	}
	if cfg.opts.Debug {
		for _, o := range cfg.ignored {
			logger.Printf("-o %s: ignored", o)
		}
	}
	if cfg.foreground {
		return mountAndServe(cfg, logger, nil)
	}
	return daemonize(args, cfg.opts.Debug, stderr)
}

// exitStatus prints err and decides the exit status: the one place that
// does.
func exitStatus(stderr io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	if !errors.As(err, new(*reportedError)) {
		fmt.Fprintf(stderr, "unionmount: %v\n", err)
	}
	if errors.As(err, new(*usageError)) {
		return exitUsage
	}
	return exitFailure
}

func usageText() string {
	var v flagValues
	return `Usage:
  unionmount --lower DIR[:DIR...] [--upper DIR --workdir DIR] [flags] MOUNTPOINT
  unionmount -o lowerdir=DIR[:DIR...][,upperdir=DIR,workdir=DIR][,OPT...] MOUNTPOINT

Mounts the lower directories (leftmost on top, read-only) and the upper
directory (writable; without it the mount is read-only) as one union
filesystem at MOUNTPOINT, with the semantics of Linux overlayfs. In a
lower list, \: is a colon inside a path and \\ a backslash. The command
returns once the mount is up and a daemon serves it; unmount it with
fusermount3 -u MOUNTPOINT.

Flags:
` + flagUsages(newFlagSet(&v)) + `
-o options (the fuse-overlayfs / containers-storage mount_program form):
  lowerdir=DIRS upperdir=DIR workdir=DIR  the layers, as the flags above
  volatile, fsync=0                       skip fsync on copy-up
  uidmapping=:L:M:N[:L:M:N...]            show layer id L+i as id M+i (i < N)
  gidmapping=:L:M:N[:L:M:N...]            the same for groups
  squash_to_uid=ID squash_to_gid=ID       show every file as owned by ID
  squash_to_root                          both of the above with ID 0
  allow_other ro debug userxattr          as named; ro drops the upper
  timeout=SECONDS fsname=NAME             as --timeout; the name in mounts
  Others (context=..., xattr_permissions=2, noatime, ...) are ignored.
  Empty elements are allowed; double quotes protect commas in a value.

Exit status: 0 mounted (with -f: unmounted cleanly), 1 the mount failed,
2 bad arguments.
`
}

// flagUsages lists the flags as pflag's FlagUsages does, without the
// "[=true|false]" it appends to every bool flag.
func flagUsages(fs *pflag.FlagSet) string {
	var names, usages []string
	width := 0
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		name := "      --" + f.Name
		if f.Shorthand != "" {
			name = "  -" + f.Shorthand + ", --" + f.Name
		}
		varname, usage := pflag.UnquoteUsage(f)
		if f.Value.Type() != "bool" && varname != "" {
			name += " " + varname
		}
		if f.Value.Type() != "bool" && f.DefValue != "" && f.DefValue != "[]" {
			usage += " (default " + f.DefValue + ")"
		}
		names, usages = append(names, name), append(usages, usage)
		width = max(width, len(name))
	})
	var b strings.Builder
	for i := range names {
		fmt.Fprintf(&b, "%-*s   %s\n", width, names[i], usages[i])
	}
	return b.String()
}

// versionLine is the one line --version prints.
func versionLine() string {
	fuseVersion := "v2.12.1"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/hanwen/go-fuse/v2" {
				fuseVersion = d.Version
				switch {
				case d.Replace == nil:
				case d.Replace.Version == "" || d.Replace.Version == "(devel)":
					// A directory: third_party/go-fuse, d.Version
					// with the changes its README lists.
					fuseVersion = d.Version + " + " + d.Replace.Path
				default:
					fuseVersion = d.Replace.Version
				}
			}
		}
	}
	return fmt.Sprintf("unionmount %s (go-fuse %s)", version, fuseVersion)
}
