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
	code := m.Run()
	imagetest.Cleanup() // unionctl's build and fstest.Binary's
	os.Exit(code)
}
