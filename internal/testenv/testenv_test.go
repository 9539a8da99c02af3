package testenv

import (
	"fmt"
	"strings"
	"testing"
)

// recorder is a testing.TB that records which of Fatalf and Skipf ran.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Fatalf(format string, a ...any) { r.fatal = fmt.Sprintf(format, a...) }
func (r *recorder) Skipf(format string, a ...any)  { r.skip = fmt.Sprintf(format, a...) }

func TestSkipf(t *testing.T) {
	for _, ci := range []string{"true", "", "false"} {
		t.Run("CI="+ci, func(t *testing.T) {
			t.Setenv("CI", ci)
			r := &recorder{}
			Skipf(r, "needs %s", "strace")
			if ci == "true" {
				if !strings.HasPrefix(r.fatal, "needs strace (CI=true: ") || !strings.Contains(r.fatal, "scripts/install-deps.sh") {
					t.Errorf("Fatalf(%q); want the reason and the CI note", r.fatal)
				}
				return
			}
			if r.fatal != "" || r.skip != "needs strace" {
				t.Errorf("Fatalf(%q), Skipf(%q); want only Skipf(\"needs strace\")", r.fatal, r.skip)
			}
		})
	}
}
