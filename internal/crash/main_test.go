package crash

import (
	"flag"
	"os"
	"testing"

	"github.com/unionmount/unionmount/internal/fstest"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	flag.Parse()
	// The models write 0644 files and 0755 directories.
	unix.Umask(0o022)
	code := m.Run()
	fstest.RemoveBinary()
	os.Exit(code)
}
