package rootless

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/internal/testenv"
)

// TestHostRequirementErrors takes away, one at a time, what a host needs
// for rootless mounts and checks that unionmount then exits 1 with a
// message that names the fix. README.md and docs/rootless.md quote each
// message, and what fusermount3 (through fuse-overlayfs) says in the same
// spot, which is what a user sees without our checks: the test checks
// that both quote them as printed. Everything it takes away it takes in
// the sandbox's private mount namespace; the host stays as it is.
func TestHostRequirementErrors(t *testing.T) {
	fstest.RequireFUSE(t)
	u := NewUser(t)
	bin := userBinary(t, u)
	s := newStack(t, u, []fstest.Applier{fstest.CreateFile("a", []byte("a\n"), 0o644)})
	noAllowOther := "# user_allow_other\n"
	withAllowOther := "user_allow_other\n"

	// A fusermount3 without its setuid bit, found first in PATH.
	plain := filepath.Join(u.rootDir(t), "fusermount3")
	fusermount3, err := exec.LookPath("fusermount3")
	if err != nil {
		testenv.Skipf(t, "needs fusermount3 (apt-get install fuse3)")
	}
	if b, err := os.ReadFile(fusermount3); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(plain, b, 0o755); err != nil {
		t.Fatal(err)
	}

	// The same copy bound over the real one, as on a host where the
	// setuid bit got lost: fuse-overlayfs, which runs that path, fails too.
	realFusermount3, err := filepath.EvalSymlinks(fusermount3)
	if err != nil {
		t.Fatal(err)
	}
	docs := readDocs(t)

	for _, tc := range []struct {
		name   string
		sb     Sandbox
		prefix []string // runs unionmount under this command
		args   []string
		want   string // in unionmount's stderr; "" means it mounts
		// undocumented: the message names a temporary path, so the docs
		// quote it with the usual one (the bound case below).
		undocumented bool
	}{
		{name: "fuse 0600", sb: Sandbox{FuseMode: 0o600},
			want: "unionmount: cannot open /dev/fuse (permission denied): make it mode 0666"},
		{name: "fuse 0600 in a user namespace", sb: Sandbox{FuseMode: 0o600},
			prefix: []string{"unshare", "--user", "--map-root-user", "--mount"},
			want:   "unionmount: cannot open /dev/fuse (permission denied): make it mode 0666"},
		{name: "allow_other without user_allow_other", sb: Sandbox{FuseMode: 0o666, FuseConf: &noAllowOther},
			args: []string{"--allow-other"},
			want: "unionmount: allow_other as a non-root user needs user_allow_other in /etc/fuse.conf"},
		{name: "allow_other with user_allow_other", sb: Sandbox{FuseMode: 0o666, FuseConf: &withAllowOther},
			args: []string{"--allow-other"}},
		{name: "fusermount3 not setuid, first in PATH", sb: Sandbox{FuseMode: 0o666, Env: []string{"PATH=" + filepath.Dir(plain) + ":/usr/bin:/bin"}},
			want: "unionmount: " + plain + " is not setuid root", undocumented: true},
		{name: "fusermount3 not setuid", sb: Sandbox{FuseMode: 0o666, Binds: [][2]string{{plain, realFusermount3}}},
			want: "unionmount: " + realFusermount3 + " is not setuid root"},
		{name: "user namespace without its own mount namespace", sb: Sandbox{FuseMode: 0o666},
			prefix: []string{"unshare", "--user", "--map-root-user"},
			want:   "unionmount: mount(2) is refused here: this user namespace does not own the mount namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The mount, if it happens, is in the command's own mount
			// namespace: unmount it there, then check the daemon is gone.
			script := `"$@" -o "lowerdir=$L,upperdir=$U,workdir=$W" "$M" && fusermount3 -u "$M"`
			argv := append(append([]string{}, tc.prefix...), "/bin/sh", "-c", script, "sh", bin)
			argv = append(argv, tc.args...)
			env := append([]string{"L=" + s.lower, "U=" + s.upper, "W=" + s.work, "M=" + s.mnt}, tc.sb.Env...)
			sb := tc.sb
			sb.Env = env
			r := u.Run(t, sb, argv[0], argv[1:]...)
			waitNoProcesses(t, u)
			if tc.want == "" {
				if r.Err != nil {
					t.Fatalf("want the mount to work:\n%s", r)
				}
				return
			}
			if r.ExitCode() != 1 || !strings.Contains(r.Stderr, tc.want) {
				t.Errorf("want exit 1 and %q:\n%s", tc.want, r)
			}
			if strings.Count(strings.TrimSpace(r.Stderr), "\n") != 0 {
				t.Errorf("want one line on stderr:\n%s", r.Stderr)
			}
			said := strings.TrimSpace(r.Stderr)
			t.Logf("unionmount says: %s", said)
			if !tc.undocumented {
				docs.check(t, said)
			}
			if _, err := exec.LookPath("fuse-overlayfs"); err == nil {
				// libfuse runs its built-in fusermount3 path, not PATH's.
				fo := append(append([]string{}, tc.prefix...), "/bin/sh", "-c",
					`fuse-overlayfs -o "lowerdir=$L,upperdir=$U,workdir=$W$X" "$M" && "$FUSERMOUNT3" -u "$M"`)
				x := ""
				if len(tc.args) > 0 {
					x = ",allow_other"
				}
				sb.Env = append(sb.Env, "X="+x, "FUSERMOUNT3="+fusermount3)
				fr := u.Run(t, sb, fo[0], fo[1:]...)
				waitNoProcesses(t, u)
				if fr.Err == nil {
					t.Logf("fuse-overlayfs mounts here (it does not look fusermount3 up in PATH)")
					return
				}
				t.Logf("fuse-overlayfs says (exit %d): %s", fr.ExitCode(), strings.TrimSpace(fr.Stderr))
				// What libfuse and fusermount3 print is what a user of
				// any FUSE program without our checks sees.
				for _, line := range strings.Split(fr.Stderr, "\n") {
					if strings.HasPrefix(line, "fuse: ") || strings.HasPrefix(line, "fusermount3: ") {
						docs.check(t, line)
					}
				}
			}
		})
	}
}

// docFiles are the documents that quote the host requirement messages.
var docFiles = []string{"README.md", "docs/rootless.md"}

// docs holds docFiles' text, with markdown line breaks joined.
type docs map[string]string

func readDocs(t *testing.T) docs {
	t.Helper()
	root, err := fstest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	d := docs{}
	for _, f := range docFiles {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		d[f] = string(b)
	}
	return d
}

// check fails the test unless every document quotes msg exactly, in
// backticks.
func (d docs) check(t *testing.T, msg string) {
	t.Helper()
	for _, f := range docFiles {
		if !strings.Contains(d[f], "`"+msg+"`") {
			t.Errorf("%s does not quote the message as printed: `%s`", f, msg)
		}
	}
}
