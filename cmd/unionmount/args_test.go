package main

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/unionmount/unionmount/unionfs"
)

// defaults is what parseArgs puts in Options when no flag says otherwise.
func defaults(lowers ...string) unionfs.Options {
	return unionfs.Options{
		Lowers:             lowers,
		EntryTimeout:       time.Hour,
		AttrTimeout:        time.Hour,
		NegativeTimeout:    time.Hour,
		LookupCacheEntries: 1 << 20,
		Passthrough:        true,
		SquashUID:          -1,
		SquashGID:          -1,
	}
}

func with(o unionfs.Options, f func(*unionfs.Options)) unionfs.Options {
	f(&o)
	return o
}

func withTimeout(o unionfs.Options, d time.Duration) unionfs.Options {
	o.EntryTimeout, o.AttrTimeout, o.NegativeTimeout = d, d, d
	return o
}

func TestParseArgsLowerForm(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		want       unionfs.Options
		mnt        string
		foreground bool
	}{
		{
			name: "lowers upper workdir",
			args: []string{"--lower", "a:b", "--upper", "u", "--workdir", "w", "mnt"},
			want: with(defaults("a", "b"), func(o *unionfs.Options) { o.Upper, o.Workdir = "u", "w" }),
			mnt:  "mnt",
		},
		{
			name: "read-only, one lower",
			args: []string{"--lower", "/l", "/mnt"},
			want: defaults("/l"),
			mnt:  "/mnt",
		},
		{
			name: "escaped colon and backslash",
			args: []string{"--lower", `a\:b:c\\d:e\f`, "mnt"},
			want: defaults("a:b", `c\d`, "ef"),
			mnt:  "mnt",
		},
		{
			name: "every flag",
			args: []string{"-f", "--debug", "--timeout", "0", "--allow-other", "--cache-entries", "0",
				"--no-passthrough", "--volatile", "--lower=a", "mnt"},
			want: with(withTimeout(defaults("a"), 0), func(o *unionfs.Options) {
				o.Debug, o.AllowOther, o.LookupCacheEntries, o.Passthrough, o.NoFsync = true, true, 0, false, true
			}),
			mnt:        "mnt",
			foreground: true,
		},
		{
			name:       "long foreground, timeout as duration",
			args:       []string{"--foreground", "--timeout=1m30s", "--lower", "a", "mnt"},
			want:       withTimeout(defaults("a"), 90*time.Second),
			mnt:        "mnt",
			foreground: true,
		},
		{
			name: "flags after the operand",
			args: []string{"mnt", "--lower", "a", "--cache-entries=7"},
			want: with(defaults("a"), func(o *unionfs.Options) { o.LookupCacheEntries = 7 }),
			mnt:  "mnt",
		},
		{
			name: "operand after --",
			args: []string{"--lower", "a", "--", "-mnt"},
			want: defaults("a"),
			mnt:  "-mnt",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseArgs(tc.args)
			if err != nil {
				t.Fatalf("parseArgs(%q): %v", tc.args, err)
			}
			if !reflect.DeepEqual(cfg.opts, tc.want) {
				t.Errorf("parseArgs(%q) options\n got %+v\nwant %+v", tc.args, cfg.opts, tc.want)
			}
			if cfg.mountpoint != tc.mnt || cfg.foreground != tc.foreground || cfg.readyFD != -1 {
				t.Errorf("parseArgs(%q): mountpoint %q foreground %v readyFD %d; want %q %v -1",
					tc.args, cfg.mountpoint, cfg.foreground, cfg.readyFD, tc.mnt, tc.foreground)
			}
		})
	}
}

func TestParseArgsOptionForm(t *testing.T) {
	rw := func(lowers ...string) unionfs.Options {
		return with(defaults(lowers...), func(o *unionfs.Options) { o.Upper, o.Workdir = "/u", "/w" })
	}
	for _, tc := range []struct {
		name    string
		args    []string
		want    unionfs.Options
		ignored []string
	}{
		{
			name: "containers-storage read-write",
			args: []string{"-o", "lowerdir=/l1:/l2,upperdir=/u,workdir=/w", "/mnt"},
			want: rw("/l1", "/l2"),
		},
		{
			name: "image mount: lowerdir only",
			args: []string{"-o", "lowerdir=/diff:/l1", "/mnt"},
			want: defaults("/diff", "/l1"),
		},
		{
			name: "empty elements",
			args: []string{"-o", ",lowerdir=/l1,,upperdir=/u,,,workdir=/w,", "/mnt"},
			want: rw("/l1"),
		},
		{
			name:    "quoted context with commas and unknown options",
			args:    []string{"-o", `lowerdir=/l1,upperdir=/u,workdir=/w,context="system_u:object_r:container_file_t:s0:c1,c2",xattr_permissions=2,noatime,rw,suid,dev,exec,nodev`, "/mnt"},
			want:    rw("/l1"),
			ignored: []string{`context="system_u:object_r:container_file_t:s0:c1,c2"`, "xattr_permissions=2", "noatime", "rw", "suid", "dev", "exec", "nodev"},
		},
		{
			name: "id mappings as podman writes them and without the leading colon",
			args: []string{"-o", "lowerdir=/l1,uidmapping=:0:200000:65536,gidmapping=0:300000:1:1:400000:65535", "/mnt"},
			want: with(defaults("/l1"), func(o *unionfs.Options) {
				o.UIDMap = []unionfs.IDMap{{Host: 0, Container: 200000, Size: 65536}}
				o.GIDMap = []unionfs.IDMap{{Host: 0, Container: 300000, Size: 1}, {Host: 1, Container: 400000, Size: 65535}}
			}),
		},
		{
			name: "squash to ids",
			args: []string{"-o", "lowerdir=/l1,squash_to_uid=1000,squash_to_gid=100", "/mnt"},
			want: with(defaults("/l1"), func(o *unionfs.Options) { o.SquashUID, o.SquashGID = 1000, 100 }),
		},
		{
			name: "squash to root",
			args: []string{"-o", "lowerdir=/l1,squash_to_root", "/mnt"},
			want: with(defaults("/l1"), func(o *unionfs.Options) { o.SquashUID, o.SquashGID = 0, 0 }),
		},
		{
			name: "ro drops the upper",
			args: []string{"-o", "lowerdir=/l1,upperdir=/u,workdir=/w,ro", "/mnt"},
			want: defaults("/l1"),
		},
		{
			name: "volatile",
			args: []string{"-o", "lowerdir=/l1,upperdir=/u,workdir=/w,volatile", "/mnt"},
			want: with(rw("/l1"), func(o *unionfs.Options) { o.NoFsync = true }),
		},
		{
			name: "fsync=0",
			args: []string{"-o", "lowerdir=/l1,fsync=0", "/mnt"},
			want: with(defaults("/l1"), func(o *unionfs.Options) { o.NoFsync = true }),
		},
		{
			name: "allow_other debug userxattr fsname timeout",
			args: []string{"-o", "lowerdir=/l1,allow_other,debug,userxattr,fsname=ctr1,timeout=2.5", "/mnt"},
			want: with(withTimeout(defaults("/l1"), 2500*time.Millisecond), func(o *unionfs.Options) {
				o.AllowOther, o.Debug, o.Rootless, o.FsName = true, true, true, "ctr1"
			}),
		},
		{
			name: "timeout=0",
			args: []string{"-o", "lowerdir=/l1,timeout=0", "/mnt"},
			want: withTimeout(defaults("/l1"), 0),
		},
		{
			name: "escapes in lowerdir, upperdir and workdir",
			args: []string{"-o", `lowerdir=/a\:b:/c\,d:/e\\f,upperdir=/u\:1,workdir=/w\,1`, "/mnt"},
			want: with(defaults("/a:b", "/c,d", `/e\f`), func(o *unionfs.Options) { o.Upper, o.Workdir = "/u:1", "/w,1" }),
		},
		{
			name: "quoted lowerdir holds a comma",
			args: []string{"-o", `lowerdir="/a,b:/c"`, "/mnt"},
			want: defaults("/a,b", "/c"),
		},
		{
			name: "-o repeated and mixed with flags",
			args: []string{"-o", "lowerdir=/l1", "--upper", "/u", "-o", "workdir=/w", "--debug", "/mnt"},
			want: with(rw("/l1"), func(o *unionfs.Options) { o.Debug = true }),
		},
		{
			name: "-o=value and -ovalue",
			args: []string{"-o=lowerdir=/l1", "-oupperdir=/u,workdir=/w", "/mnt"},
			want: rw("/l1"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseArgs(tc.args)
			if err != nil {
				t.Fatalf("parseArgs(%q): %v", tc.args, err)
			}
			if !reflect.DeepEqual(cfg.opts, tc.want) {
				t.Errorf("parseArgs(%q) options\n got %+v\nwant %+v", tc.args, cfg.opts, tc.want)
			}
			if cfg.mountpoint != "/mnt" {
				t.Errorf("parseArgs(%q): mountpoint %q; want /mnt", tc.args, cfg.mountpoint)
			}
			if !reflect.DeepEqual(cfg.ignored, tc.ignored) {
				t.Errorf("parseArgs(%q) ignored %q; want %q", tc.args, cfg.ignored, tc.ignored)
			}
			if cfg.lowerSrc != "-o lowerdir" {
				t.Errorf("parseArgs(%q) lowerSrc %q; want \"-o lowerdir\"", tc.args, cfg.lowerSrc)
			}
		})
	}
}

func TestParseArgsHelpVersion(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"--lower", "::", "-h"}} {
		cfg, err := parseArgs(args)
		if err != nil || !cfg.help {
			t.Errorf("parseArgs(%q) = help %v, %v; want help", args, cfg.help, err)
		}
	}
	cfg, err := parseArgs([]string{"--version"})
	if err != nil || !cfg.version {
		t.Errorf("parseArgs(--version) = version %v, %v; want version", cfg.version, err)
	}
}

// TestParseArgsErrors runs every bad command line through run: exit 2 and
// one line on stderr that names the flag (each want) and, with "; ", the fix.
func TestParseArgsErrors(t *testing.T) {
	many := func(n int) string {
		l := make([]string, n)
		for i := range l {
			l[i] = "/l"
		}
		return strings.Join(l, ":")
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"MOUNTPOINT", "got 0"}},
		{[]string{"--lower", "a"}, []string{"MOUNTPOINT", "got 0"}},
		{[]string{"--lower", "a", "m1", "m2"}, []string{"MOUNTPOINT", "got 2", `"m1" "m2"`}},
		{[]string{"mnt"}, []string{"no lower", "--lower", "-o lowerdir="}},
		{[]string{"-o", "upperdir=/u,workdir=/w", "mnt"}, []string{"no lower"}},
		{[]string{"--lower", "a", "-o", "lowerdir=b", "mnt"}, []string{"--lower and -o lowerdir="}},
		{[]string{"--lower", "a", "--upper", "u", "-o", "upperdir=v", "mnt"}, []string{"--upper and -o upperdir="}},
		{[]string{"--lower", "a", "--workdir", "w", "-o", "workdir=v", "mnt"}, []string{"--workdir and -o workdir="}},
		{[]string{"--lower", "a", "--timeout", "1s", "-o", "timeout=2", "mnt"}, []string{"--timeout and -o timeout="}},
		{[]string{"--lower", "a", "--uring", "yes", "mnt"}, []string{`--uring "yes"`, "off, auto or on"}},
		{[]string{"-o", "lowerdir=a,uring=1", "mnt"}, []string{`--uring "1"`, "off, auto or on"}},
		{[]string{"-o", "lowerdir=a,uring", "mnt"}, []string{"-o uring: missing value"}},
		{[]string{"--lower", "a", "--uring", "on", "-o", "uring=auto", "mnt"}, []string{"--uring and -o uring="}},
		{[]string{"--lower", "a", "--upper", "u", "mnt"}, []string{"--upper given without --workdir"}},
		{[]string{"--lower", "a", "--workdir", "w", "mnt"}, []string{"--workdir given without --upper"}},
		{[]string{"-o", "lowerdir=a,upperdir=u", "mnt"}, []string{"-o upperdir given without workdir="}},
		{[]string{"-o", "lowerdir=a,workdir=w", "mnt"}, []string{"-o workdir given without upperdir="}},
		{[]string{"--lower", many(501), "mnt"}, []string{"--lower", "501", "500"}},
		{[]string{"-o", "lowerdir=" + many(501), "mnt"}, []string{"-o lowerdir", "501", "500"}},
		{[]string{"--lower", "", "mnt"}, []string{"--lower", "empty path"}},
		{[]string{"--lower", "a::b", "mnt"}, []string{"--lower", "empty path"}},
		{[]string{"--lower", "a:", "mnt"}, []string{"--lower", "empty path"}},
		{[]string{"--lower", ":a", "mnt"}, []string{"--lower", "empty path"}},
		{[]string{"--lower", `a\`, "mnt"}, []string{"--lower", "backslash"}},
		{[]string{"-o", "lowerdir=", "mnt"}, []string{"-o lowerdir", "missing value"}},
		{[]string{"-o", "lowerdir", "mnt"}, []string{"-o lowerdir", "missing value"}},
		{[]string{"-o", "lowerdir=a::b", "mnt"}, []string{"-o lowerdir", "empty path"}},
		{[]string{"-o", "lowerdir=a,lowerdir=b", "mnt"}, []string{"-o lowerdir", "twice"}},
		{[]string{"-o", "lowerdir=a,upperdir=u,upperdir=v,workdir=w", "mnt"}, []string{"-o upperdir", "twice"}},
		{[]string{"-o", `lowerdir=a,upperdir=u\`, "mnt"}, []string{"-o upperdir", "backslash"}},
		{[]string{"-o", `lowerdir=a,context="x:y`, "mnt"}, []string{"-o", "double quote"}},
		{[]string{"-o", "lowerdir=a,lowerdir+=b", "mnt"}, []string{"-o lowerdir+", "not supported"}},
		{[]string{"-o", "lowerdir=a,uidmapping=:0:1", "mnt"}, []string{"-o uidmapping", "triples"}},
		{[]string{"-o", "lowerdir=a,gidmapping=", "mnt"}, []string{"-o gidmapping", "missing value"}},
		{[]string{"-o", "lowerdir=a,uidmapping=:", "mnt"}, []string{"-o uidmapping", "triples"}},
		{[]string{"-o", "lowerdir=a,uidmapping=:0:1:0", "mnt"}, []string{"-o uidmapping", "empty"}},
		{[]string{"-o", "lowerdir=a,uidmapping=:x:1:1", "mnt"}, []string{"-o uidmapping", "not an id"}},
		{[]string{"-o", "lowerdir=a,uidmapping=:0:-1:1", "mnt"}, []string{"-o uidmapping", "not an id"}},
		{[]string{"-o", "lowerdir=a,gidmapping=:4294967295:0:2", "mnt"}, []string{"-o gidmapping", "largest id"}},
		{[]string{"-o", "lowerdir=a,uidmapping=::0:1:1", "mnt"}, []string{"-o uidmapping"}},
		{[]string{"-o", "lowerdir=a,squash_to_uid=-1", "mnt"}, []string{"-o squash_to_uid", "not an id"}},
		{[]string{"-o", "lowerdir=a,squash_to_gid=abc", "mnt"}, []string{"-o squash_to_gid", "not an id"}},
		{[]string{"-o", "lowerdir=a,squash_to_gid=4294967296", "mnt"}, []string{"-o squash_to_gid", "not an id"}},
		{[]string{"-o", "lowerdir=a,fsync=2", "mnt"}, []string{"-o fsync", "fsync=0"}},
		{[]string{"-o", "lowerdir=a,timeout=-1", "mnt"}, []string{"-o timeout", "seconds"}},
		{[]string{"-o", "lowerdir=a,timeout=soon", "mnt"}, []string{"-o timeout", "seconds"}},
		{[]string{"-o", "lowerdir=a,timeout=NaN", "mnt"}, []string{"-o timeout", "seconds"}},
		{[]string{"--lower", "a", "--timeout", "-1s", "mnt"}, []string{"--timeout", ">= 0"}},
		{[]string{"--lower", "a", "--timeout", "soon", "mnt"}, []string{"--timeout"}},
		{[]string{"--lower", "a", "--cache-entries", "-1", "mnt"}, []string{"--cache-entries", ">= 0"}},
		{[]string{"--lower", "a", "--cache-entries", "many", "mnt"}, []string{"--cache-entries"}},
		{[]string{"--bogus", "mnt"}, []string{"--bogus", "--help"}},
		{[]string{"-x", "mnt"}, []string{"-x", "--help"}},
		{[]string{"--lower", "a", "mnt", "-o"}, []string{"'o'", "--help"}},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, &stdout, &stderr)
		msg := stderr.String()
		if code != exitUsage {
			t.Errorf("run(%q) = %d, stderr %q; want %d", tc.args, code, msg, exitUsage)
			continue
		}
		if !strings.HasPrefix(msg, "unionmount: ") || strings.Count(msg, "\n") != 1 || !strings.HasSuffix(msg, "\n") {
			t.Errorf("run(%q) stderr %q; want one line starting with \"unionmount: \"", tc.args, msg)
		}
		if !strings.Contains(msg, "; ") {
			t.Errorf("run(%q) stderr %q; want a fix after \"; \"", tc.args, msg)
		}
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("run(%q) stderr %q; want it to contain %q", tc.args, msg, w)
			}
		}
		if stdout.Len() != 0 {
			t.Errorf("run(%q) wrote %q to stdout; want nothing", tc.args, stdout.String())
		}
	}
}

func TestRunHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != exitOK || stderr.Len() != 0 {
			t.Fatalf("run(%q) = %d, stderr %q; want 0 and nothing", args, code, stderr.String())
		}
		out := stdout.String()
		for _, w := range []string{
			"unionmount --lower DIR[:DIR...] [--upper DIR --workdir DIR] [flags] MOUNTPOINT",
			"unionmount -o lowerdir=DIR[:DIR...]",
			"--lower", "--upper", "--workdir", "-o, --options", "-f, --foreground", "--debug",
			"--timeout", "(default 1h0m0s)", "--allow-other", "--cache-entries", "(default 1048576)",
			"--no-passthrough", "--volatile", "--version", "-h, --help", "uidmapping=", "squash_to_root",
			"Exit status",
		} {
			if !strings.Contains(out, w) {
				t.Errorf("run(%q) usage lacks %q:\n%s", args, w, out)
			}
		}
		if strings.Contains(out, readyFDFlag) || strings.Contains(out, "[=true|false]") {
			t.Errorf("run(%q) usage shows the hidden flag or pflag's bool noise:\n%s", args, out)
		}
	}
}

func TestRunVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--version"}, &stdout, &stderr); code != exitOK || stderr.Len() != 0 {
		t.Fatalf("run(--version) = %d, stderr %q; want 0 and nothing", code, stderr.String())
	}
	want := "unionmount " + version + " (go-fuse v2.12.1 + ./third_party/go-fuse)\n"
	if got := stdout.String(); got != want {
		t.Errorf("run(--version) printed %q; want %q", got, want)
	}
}

func TestParseIDMapping(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []unionfs.IDMap
	}{
		{":0:100000:65536", []unionfs.IDMap{{Host: 0, Container: 100000, Size: 65536}}},
		{"0:100000:65536", []unionfs.IDMap{{Host: 0, Container: 100000, Size: 65536}}},
		{":0:1000:1:1:100000:65536", []unionfs.IDMap{{Host: 0, Container: 1000, Size: 1}, {Host: 1, Container: 100000, Size: 65536}}},
		{"4294967294:0:1", []unionfs.IDMap{{Host: 4294967294, Container: 0, Size: 1}}},
		{"0:0:4294967295", []unionfs.IDMap{{Host: 0, Container: 0, Size: 4294967295}}},
	} {
		got, err := parseIDMapping(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseIDMapping(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestSplitOptions(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{",,,", nil},
		{"a,b", []string{"a", "b"}},
		{`a\,b,c`, []string{`a\,b`, "c"}},
		{`x="1,2",y`, []string{`x="1,2"`, "y"}},
		{`x=\"1,2`, []string{`x=\"1`, "2"}},
		{`a\`, []string{`a\`}},
	} {
		got, err := splitOptions(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitOptions(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestParseArgsURing: --uring and -o uring= choose the transport; off, the
// default, asks go-fuse for no io_uring.
func TestParseArgsURing(t *testing.T) {
	for _, tc := range []struct {
		args []string
		mode string
	}{
		{[]string{"--lower", "/l", "/m"}, uringOff},
		{[]string{"--lower", "/l", "--uring", "auto", "/m"}, uringAuto},
		{[]string{"--uring=on", "--lower", "/l", "/m"}, uringOn},
		{[]string{"-o", "lowerdir=/l,uring=on", "/m"}, uringOn},
		{[]string{"-o", "lowerdir=/l,uring=off", "/m"}, uringOff},
	} {
		cfg, err := parseArgs(tc.args)
		if err != nil {
			t.Errorf("parseArgs(%q): %v", tc.args, err)
			continue
		}
		if cfg.uring != tc.mode || cfg.opts.IoUring != (tc.mode != uringOff) {
			t.Errorf("parseArgs(%q): mode %q, IoUring %v; want %q", tc.args, cfg.uring, cfg.opts.IoUring, tc.mode)
		}
	}
}
