// Package testenv holds the one rule for tests that need something from the
// machine: a missing root, tool, package, kernel feature, module or device
// skips the test with the reason, except under CI=true, where the same
// condition fails it, so a missing install step or privilege cannot pass
// green. It imports only the standard library, so any package's tests can
// use it (internal/fstest re-exports it as fstest.Skipf).
package testenv

import (
	"fmt"
	"os"
	"testing"
)

// CI reports whether the tests run under CI=true.
func CI() bool { return os.Getenv("CI") == "true" }

// ciNote is appended to the reason when CI=true turns the skip into a failure.
const ciNote = " (CI=true: a test may not skip for a missing tool or privilege; install it in scripts/install-deps.sh)"

// Skipf skips the test with the reason, or fails it with the same reason when
// CI=true. Use it only for skips about the environment; deliberate skips
// (testing.Short, opt-in modes, not-applicable paths) call t.Skip directly.
func Skipf(t testing.TB, format string, args ...any) {
	t.Helper()
	if CI() {
		t.Fatalf("%s%s", fmt.Sprintf(format, args...), ciNote)
	}
	t.Skipf(format, args...)
}
