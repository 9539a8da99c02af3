package unionfs

import (
	"os"
	"strings"
	"testing"

	"github.com/unionmount/unionmount/internal/lockrank"
)

// TestLockOrderInversionCaught takes a node's mu and then the link lock,
// the wrong way round (doc.go): a build with -tags lockcheck reports it.
func TestLockOrderInversionCaught(t *testing.T) {
	if !lockrank.Enabled {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI runs the lock-order checks: go test -tags lockcheck ./unionfs")
		}
		t.Skip("the lock order is checked only with -tags lockcheck (make test runs it)")
	}
	u, err := newUnion(Options{Lowers: []string{t.TempDir()}, SquashUID: -1, SquashGID: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.close)
	var got string
	old := lockrank.OnInversion
	lockrank.OnInversion = func(r string) { got = r }
	defer func() { lockrank.OnInversion = old }()
	n := u.root
	n.mu.Lock()
	u.linkMu.RLock()
	u.linkMu.RUnlock()
	n.mu.Unlock()
	if !strings.Contains(got, "unionFS.linkMu (rank 50) taken while holding node.mu (rank 70)") {
		t.Errorf("inversion reported as %q", got)
	}
	got = ""
	u.linkMu.RLock()
	n.mu.Lock()
	n.mu.Unlock()
	u.linkMu.RUnlock()
	if got != "" {
		t.Errorf("the right order reported: %q", got)
	}
}
