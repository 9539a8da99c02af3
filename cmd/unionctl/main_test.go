package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/unionmount/unionmount/image/imagetest"
	"github.com/unionmount/unionmount/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	imagetest.Cleanup()
	os.Exit(code)
}

// runInProcess runs the command line in this process (verbs that start
// no process of their own).
func runInProcess(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// TestUsage: bad command lines exit 2 with one line that says what to do;
// help exits 0.
func TestUsage(t *testing.T) {
	root := t.TempDir()
	cases := []struct {
		args []string
		code int
		want string // in stderr (stdout for code 0)
	}{
		{[]string{}, 2, "no verb given"},
		{[]string{"frobnicate"}, 2, `unknown verb "frobnicate"`},
		{[]string{"--bogus"}, 2, "unknown flag: --bogus"},
		{[]string{"--root", root, "images", "-x"}, 2, "see unionctl images --help"},
		{[]string{"--root", root, "import"}, 2, "give TARBALL"},
		{[]string{"--root", root, "import", "-", "Bad:Name"}, 2, "invalid reference"},
		{[]string{"--root", root, "save", "x"}, 1, "no image \"x\""},
		{[]string{"--root", root, "save", "--format", "zip", "x"}, 2, "use oci-archive or docker-archive"},
		{[]string{"--root", root, "run"}, 2, "give an IMAGE"},
		{[]string{"--root", root, "run", "-v", "nocolon", "img"}, 2, "use HOST:CTR[:ro]"},
		{[]string{"--root", root, "run", "--runtime", "crun", "img"}, 2, "use runc"},
		{[]string{"--root", root, "rmi"}, 2, "give at least one IMAGE"},
		{[]string{"--root", root, "volume", "explode"}, 2, "unknown subcommand"},
		{[]string{"--root", root, "load", "-i", "a", "--layout", "b"}, 2, "not both"},
		// Flags after operands, as docker takes them.
		{[]string{"--root", root, "save", "x", "--format", "zip"}, 2, "use oci-archive or docker-archive"},
		{[]string{"--root", root, "images", "--format", "yaml"}, 2, "only json"},
		{[]string{"--root", root, "pull"}, 2, "give one image reference"},
		{[]string{"--root", root, "pull", "Bad/Name"}, 2, "invalid reference"},
		{[]string{"--root", root, "pull", "busybox", "--platform", "linux"}, 2, "use OS/ARCH[/VARIANT]"},
		{[]string{"--root", root, "pull", "127.0.0.1:1/x", "--tls-verify=false"}, 1, "cannot reach the registry"},
		{[]string{"--root", root, "push", "nosuch", "--tls-verify=false"}, 1, "no image \"nosuch\""},
		{[]string{"login", "127.0.0.1:1"}, 2, "give the user name with -u USER"},
		{[]string{"login", "-u", "me", "127.0.0.1:1"}, 2, "--password-stdin"},
		{[]string{"--help"}, 0, "Usage: unionctl"},
		{[]string{"run", "--help"}, 0, "Usage: unionctl run [flags] IMAGE [CMD...]"},
		{[]string{"--version"}, 0, "unionctl "},
	}
	if os.Geteuid() != 0 {
		testenv.Skipf(t, "needs root: the store verbs re-execute in a user namespace otherwise")
	}
	for _, c := range cases {
		code, out, errOut := runInProcess(t, c.args...)
		text := errOut
		if c.code == 0 {
			text = out
		}
		if code != c.code || !strings.Contains(text, c.want) {
			t.Errorf("unionctl %q: exit %d, want %d; output %q should contain %q", c.args, code, c.code, text, c.want)
		}
		if c.code != 0 && strings.Count(strings.TrimSpace(errOut), "\n") > 0 && len(c.args) > 0 {
			t.Errorf("unionctl %q: error takes more than one line: %q", c.args, errOut)
		}
	}
}

func TestHumanSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0B", 999: "999B", 1000: "1kB", 12345: "12.3kB", 4_261_000: "4.26MB", 1e9: "1GB"} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
	for d, want := range map[time.Duration]string{
		0: "Less than a second", 5 * time.Second: "5 seconds", 90 * time.Second: "About a minute",
		10 * time.Minute: "10 minutes", 3 * time.Hour: "3 hours", 72 * time.Hour: "3 days",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestParseVolume(t *testing.T) {
	for in, want := range map[string]string{
		"/host:/ctr":    "bind /host /ctr false",
		"/host:/ctr:ro": "bind /host /ctr true",
		"data:/d":       "volume data /d false",
		"data:/d:rw":    "volume data /d false",
	} {
		m, err := parseVolume(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if got := strings.Join([]string{m.Type, m.Source, m.Destination, map[bool]string{true: "true", false: "false"}[m.ReadOnly]}, " "); got != want {
			t.Errorf("%q: %s, want %s", in, got, want)
		}
	}
	for _, in := range []string{"x", ":/a", "a:", "a:b", "a:/b:zz", "a:/b:ro:x"} {
		if _, err := parseVolume(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// TestChooseRoot: the store without --root is the system's for real root
// and the user's own otherwise, where docker and podman users expect it
// (XDG base directories: an empty or relative XDG_DATA_HOME is ignored).
func TestChooseRoot(t *testing.T) {
	cases := []struct {
		realRoot  bool
		xdg, home string
		want      string
	}{
		{true, "", "/root", "/var/lib/unionmount"},
		{true, "/root/.data", "/root", "/var/lib/unionmount"},
		{false, "/home/u/.data", "/home/u", "/home/u/.data/unionmount"},
		{false, "", "/home/u", "/home/u/.local/share/unionmount"},
		{false, "relative/data", "/home/u", "/home/u/.local/share/unionmount"},
		{false, "/x", "", "/x/unionmount"},
		{false, "", "", ""},
		{false, "", "relative", ""},
	}
	for _, c := range cases {
		if got := chooseRoot(c.realRoot, c.xdg, c.home); got != c.want {
			t.Errorf("chooseRoot(realRoot=%v, XDG_DATA_HOME=%q, HOME=%q) = %q, want %q", c.realRoot, c.xdg, c.home, got, c.want)
		}
	}
}
