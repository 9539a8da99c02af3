package crash

import (
	"flag"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/image/imagetest"
)

func TestMain(m *testing.M) {
	flag.Parse()
	// The models write 0644 files and 0755 directories.
	unix.Umask(0o022)
	// Every scenario kills the daemon hundreds of times: it runs the
	// plain build when make test provides one (UNIONMOUNT_BIN is then a
	// -race build, which made this package take 7 minutes instead of 2).
	// The race detector watches the daemon in the other packages.
	if p := os.Getenv("UNIONMOUNT_PLAIN_BIN"); p != "" {
		os.Setenv("UNIONMOUNT_BIN", p)
	}
	code := m.Run()
	imagetest.Cleanup() // unionctl's build and fstest.Binary's
	os.Exit(code)
}
