package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fixture is a directory tree for validation tests: two lowers, an upper,
// a workdir, a mount point and a plain file, all in one t.TempDir.
type fixture struct {
	root, l1, l2, u, w, mnt, file string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fx := fixture{
		root: root,
		l1:   filepath.Join(root, "l1"),
		l2:   filepath.Join(root, "l2"),
		u:    filepath.Join(root, "u"),
		w:    filepath.Join(root, "w"),
		mnt:  filepath.Join(root, "mnt"),
		file: filepath.Join(root, "file"),
	}
	for _, d := range []string{fx.l1, fx.l2, fx.u, fx.w, fx.mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(fx.file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	return fx
}

func mkdir(t *testing.T, p string) string {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// check parses and validates args as run does, without mounting.
func check(t *testing.T, args []string) (config, error) {
	t.Helper()
	cfg, err := parseArgs(args)
	if err == nil {
		err = validate(&cfg)
	}
	return cfg, err
}

func TestValidateErrors(t *testing.T) {
	fx := newFixture(t)
	nope := filepath.Join(fx.root, "nope")
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"missing lower", []string{"--lower", fx.l1 + ":" + nope, fx.mnt},
			[]string{`--lower "` + nope + `": no such directory; pass existing directories`}},
		{"file lower", []string{"--lower", fx.file, fx.mnt},
			[]string{`--lower "` + fx.file + `": not a directory`}},
		{"lower below a file", []string{"--lower", fx.file + "/x", fx.mnt},
			[]string{"--lower", "not a directory"}},
		{"missing lower, -o form", []string{"-o", "lowerdir=" + nope, fx.mnt},
			[]string{`-o lowerdir "` + nope + `": no such directory`}},
		{"missing upper", []string{"--lower", fx.l1, "--upper", nope, "--workdir", fx.w, fx.mnt},
			[]string{`--upper "` + nope + `": no such directory`}},
		{"file upper", []string{"--lower", fx.l1, "--upper", fx.file, "--workdir", fx.w, fx.mnt},
			[]string{`--upper "` + fx.file + `": not a directory`}},
		{"missing upper, -o form", []string{"-o", "lowerdir=" + fx.l1 + ",upperdir=" + nope + ",workdir=" + fx.w, fx.mnt},
			[]string{`-o upperdir "` + nope + `": no such directory`}},
		{"missing workdir", []string{"--lower", fx.l1, "--upper", fx.u, "--workdir", nope, fx.mnt},
			[]string{`--workdir "` + nope + `": no such directory`}},
		{"workdir on another filesystem", []string{"--lower", fx.l1, "--upper", fx.u, "--workdir", "/proc", fx.mnt},
			[]string{`--workdir "/proc": not on the filesystem of --upper`, "pick a workdir on the upper's filesystem"}},
		{"workdir inside upper", []string{"--lower", fx.l1, "--upper", fx.u, "--workdir", mkdir(t, fx.u+"/wk"), fx.mnt},
			[]string{"--workdir", "inside --upper"}},
		{"workdir is upper", []string{"--lower", fx.l1, "--upper", fx.u, "--workdir", fx.u, fx.mnt},
			[]string{"--workdir", "inside --upper"}},
		{"upper inside workdir", []string{"--lower", fx.l1, "--upper", mkdir(t, fx.w+"/up"), "--workdir", fx.w, fx.mnt},
			[]string{"--upper", "inside --workdir"}},
		{"upper inside lower", []string{"--lower", fx.l2 + ":" + fx.root, "--upper", fx.u, "--workdir", fx.w, fx.mnt},
			[]string{`--upper "` + fx.u + `": inside --lower "` + fx.root + `"`}},
		{"upper is a lower", []string{"--lower", fx.u, "--upper", fx.u, "--workdir", fx.w, fx.mnt},
			[]string{"--upper", "inside --lower"}},
		{"lower inside upper", []string{"--lower", fx.l1 + ":" + mkdir(t, fx.u+"/sub"), "--upper", fx.u, "--workdir", fx.w, fx.mnt},
			[]string{`--lower "` + fx.u + `/sub": inside --upper`}},
		{"workdir inside lower", []string{"--lower", fx.l1, "--upper", fx.u, "--workdir", mkdir(t, fx.l1+"/wk"), fx.mnt},
			[]string{"--workdir", "inside --lower"}},
		{"lower inside workdir, -o form", []string{"-o", "lowerdir=" + mkdir(t, fx.w+"/lo") + ",upperdir=" + fx.u + ",workdir=" + fx.w, fx.mnt},
			[]string{"-o lowerdir", "inside -o workdir"}},
		{"missing mountpoint", []string{"--lower", fx.l1, nope},
			[]string{`MOUNTPOINT "` + nope + `": no such directory; create it first`}},
		{"file mountpoint", []string{"--lower", fx.l1, fx.file},
			[]string{`MOUNTPOINT "` + fx.file + `": not a directory`}},
		{"mountpoint already mounted", []string{"--lower", fx.l1, "/proc"},
			[]string{`MOUNTPOINT "/proc": already a mount point`, "fusermount3 -u"}},
		{"mountpoint inside a lower", []string{"--lower", fx.l1, mkdir(t, fx.l1+"/m")},
			[]string{"MOUNTPOINT", "inside --lower"}},
		{"mountpoint inside the upper", []string{"--lower", fx.l1, "--upper", fx.u, "--workdir", fx.w, mkdir(t, fx.u+"/m")},
			[]string{"MOUNTPOINT", "inside --upper"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := check(t, tc.args)
			if err == nil {
				t.Fatalf("validate(%q) passed; want an error", tc.args)
			}
			var stderr bytes.Buffer
			if code := exitStatus(&stderr, err); code != exitUsage {
				t.Errorf("exit status %d for %v; want %d", code, err, exitUsage)
			}
			msg := stderr.String()
			if strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "; ") {
				t.Errorf("stderr %q; want one line with a fix after \"; \"", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("stderr %q; want it to contain %q", msg, w)
				}
			}
		})
	}
}

// TestValidateResolves checks that relative paths and symlinked lowers
// (podman passes l/SHORTID links) become absolute real paths.
func TestValidateResolves(t *testing.T) {
	fx := newFixture(t)
	if err := os.Symlink("l2", filepath.Join(fx.root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("mnt", filepath.Join(fx.root, "mntlink")); err != nil {
		t.Fatal(err)
	}
	t.Chdir(fx.root)
	for _, args := range [][]string{
		{"--lower", "l1:link", "--upper", "u", "--workdir", "./w/", "mntlink"},
		{"-o", "lowerdir=l1:" + fx.root + "/link,upperdir=u,workdir=w", "mnt"},
	} {
		cfg, err := check(t, args)
		if err != nil {
			t.Fatalf("validate(%q): %v", args, err)
		}
		o := cfg.opts
		if want := []string{fx.l1, fx.l2}; !reflect.DeepEqual(o.Lowers, want) {
			t.Errorf("validate(%q) lowers %q; want %q", args, o.Lowers, want)
		}
		if o.Upper != fx.u || o.Workdir != fx.w || cfg.mountpoint != fx.mnt {
			t.Errorf("validate(%q) upper %q workdir %q mountpoint %q; want %q %q %q",
				args, o.Upper, o.Workdir, cfg.mountpoint, fx.u, fx.w, fx.mnt)
		}
		root := os.Geteuid() == 0
		if o.Rootless != (!root || inUserNamespace()) || o.DirectMount != root {
			t.Errorf("validate(%q) Rootless %v DirectMount %v; want %v %v (euid %d)",
				args, o.Rootless, o.DirectMount, !root || inUserNamespace(), root, os.Geteuid())
		}
	}
}

func TestApplyIdentity(t *testing.T) {
	for _, tc := range []struct {
		euid                          int
		userNS, allowOther, userxattr bool
		wantRootless, wantDirect      bool
		wantAllowOther                bool
	}{
		{euid: 0, wantDirect: true, wantAllowOther: true},
		{euid: 0, userNS: true, wantRootless: true, wantDirect: true, wantAllowOther: true},
		{euid: 0, userxattr: true, wantRootless: true, wantDirect: true, wantAllowOther: true},
		{euid: 1000, wantRootless: true},
		{euid: 1000, allowOther: true, wantRootless: true, wantAllowOther: true},
	} {
		var cfg config
		cfg.opts.Rootless, cfg.opts.AllowOther = tc.userxattr, tc.allowOther
		applyIdentity(&cfg, tc.euid, tc.userNS)
		if got := cfg.opts; got.Rootless != tc.wantRootless || got.DirectMount != tc.wantDirect || got.AllowOther != tc.wantAllowOther {
			t.Errorf("applyIdentity(euid %d, userns %v, allow-other %v, userxattr %v): Rootless %v DirectMount %v AllowOther %v; want %v %v %v",
				tc.euid, tc.userNS, tc.allowOther, tc.userxattr, got.Rootless, got.DirectMount, got.AllowOther,
				tc.wantRootless, tc.wantDirect, tc.wantAllowOther)
		}
	}
}

func TestIsInitialIDMap(t *testing.T) {
	for in, want := range map[string]bool{
		"         0          0 4294967295\n": true,
		"         0       1000          1\n": false,
		"0 1000 1\n1 100000 65536\n":         false,
		"":                                   false,
		"         0          0 4294967295\n1 1 1\n": false,
	} {
		if got := isInitialIDMap(in); got != want {
			t.Errorf("isInitialIDMap(%q) = %v; want %v", in, got, want)
		}
	}
}

func TestWithin(t *testing.T) {
	for _, tc := range []struct {
		path, dir string
		want      bool
	}{
		{"/a/b", "/a", true},
		{"/a", "/a", true},
		{"/ab", "/a", false},
		{"/a", "/a/b", false},
		{"/anything", "/", true},
	} {
		if got := within(tc.path, tc.dir); got != tc.want {
			t.Errorf("within(%q, %q) = %v; want %v", tc.path, tc.dir, got, tc.want)
		}
	}
}
