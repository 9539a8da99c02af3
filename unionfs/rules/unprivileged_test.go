package rules

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestUnprivileged runs the rule tests again as uid/gid 65534 (nobody),
// without the kernel half: the rules write the rootless dialect
// (user.overlay.opaque, char 0/0 whiteouts, RENAME_WHITEOUT) and must
// need no privilege at all, as a rootless daemon has none.
func TestUnprivileged(t *testing.T) {
	if os.Getenv(unprivEnv) != "" {
		t.Skip("already unprivileged")
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI runs the rules as another user: run the tests as root (euid is %d)", os.Geteuid())
		}
		t.Skipf("switching to another user needs root (euid is %d); the rule tests themselves ran as this user", os.Geteuid())
	}
	const id = 65534
	// A directory nobody can reach and write, holding a copy of the test
	// binary and the child's temporary directories.
	base, err := os.MkdirTemp("", "rules-unprivileged-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	test := filepath.Join(base, "rules.test")
	if err := os.WriteFile(test, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(base, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(tmp, id, id); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(test, "-test.run=^(TestCreate|TestRemove|TestRename|TestRenameBetweenDirectories|TestCopyUp)$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), unprivEnv+"=1", "TMPDIR="+tmp)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: id, Gid: id}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rule tests as uid %d: %v\n%s", id, err, out)
	}
	// The child must have run the rules, not skipped them.
	for _, test := range []string{"TestCreate", "TestRemove", "TestRename", "TestRenameBetweenDirectories", "TestCopyUp"} {
		if !strings.Contains(string(out), "--- PASS: "+test+"/") {
			t.Errorf("rule tests as uid %d: no case of %s passed:\n%s", id, test, out)
		}
	}
}
