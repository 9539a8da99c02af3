package posix

// --lower-passthrough: lower files read by the kernel itself, and what a
// copy-up does to handles opened before it (docs/semantics.md): they keep
// reading the lower file, every open after the copy-up reaches the copy,
// and no caller sees the ESTALE that moves the name to a new inode.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestLowerPassthrough(t *testing.T) {
	fstest.RequireRoot(t)
	dir := t.TempDir()
	lower, upper, work, mnt := filepath.Join(dir, "lower"), filepath.Join(dir, "upper"),
		filepath.Join(dir, "work"), filepath.Join(dir, "mnt")
	for _, d := range []string{lower, upper, work, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	files := map[string][]byte{"big": big, "appended": []byte("old\n"), "chmodded": []byte("meta\n"), "raced": []byte("r\n")}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(lower, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	u := fstest.MountUnion(t, []string{lower}, upper, work, mnt, "--lower-passthrough", "--debug")
	if strings.Contains(u.Output(), "passthrough refused") {
		testenv.Skipf(t, "the kernel refuses FUSE passthrough here (Linux 6.9+ has it): %s", u.Output())
	}
	p := func(name string) string { return filepath.Join(mnt, name) }

	t.Run("reads bypass the daemon", func(t *testing.T) {
		got, err := os.ReadFile(p("big"))
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("read big: %d bytes, %v; want the lower's %d", len(got), err, len(big))
		}
		if n := strings.Count(u.Output(), "READ n"); n != 0 {
			t.Errorf("the daemon served %d READ requests for a lower file opened with passthrough", n)
		}
	})

	t.Run("open handle across a copy-up", func(t *testing.T) {
		old, err := os.Open(p("appended"))
		if err != nil {
			t.Fatal(err)
		}
		defer old.Close()
		var before unix.Stat_t
		if err := unix.Fstat(int(old.Fd()), &before); err != nil {
			t.Fatal(err)
		}
		// The write open meets the read handle's lower backing: the
		// daemon answers ESTALE and the kernel retries on a new inode,
		// which the caller never sees.
		w, err := os.OpenFile(p("appended"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatalf("open for append with a lower passthrough handle open: %v", err)
		}
		if _, err := w.WriteString("new\n"); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, _ := old.ReadAt(buf, 0)
		if got := string(buf[:n]); got != "old\n" {
			t.Errorf("handle opened before the copy-up reads %q; want the lower file's %q", got, "old\n")
		}
		got, err := os.ReadFile(p("appended"))
		if err != nil || string(got) != "old\nnew\n" {
			t.Errorf("a new open reads %q, %v; want %q", got, err, "old\nnew\n")
		}
		up, err := os.ReadFile(filepath.Join(upper, "appended"))
		if err != nil || string(up) != "old\nnew\n" {
			t.Errorf("upper holds %q, %v; want %q", up, err, "old\nnew\n")
		}
		var after unix.Stat_t
		if err := unix.Stat(p("appended"), &after); err != nil {
			t.Fatal(err)
		}
		if after.Ino != before.Ino {
			t.Errorf("st_ino %d after the copy-up; want %d as before it", after.Ino, before.Ino)
		}
		if !strings.Contains(u.Output(), "stale file handle") {
			t.Errorf("the daemon never answered ESTALE: the write open shared the lower handle's inode")
		}
	})

	t.Run("metadata copy-up, then an open", func(t *testing.T) {
		old, err := os.Open(p("chmodded"))
		if err != nil {
			t.Fatal(err)
		}
		defer old.Close()
		if err := os.Chmod(p("chmodded"), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p("chmodded"))
		if err != nil || string(got) != "meta\n" {
			t.Errorf("open after chmod reads %q, %v; want %q", got, err, "meta\n")
		}
		if fi, err := os.Stat(p("chmodded")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("stat after chmod: %v, %v; want mode 0600", fi, err)
		}
	})

	t.Run("readers and writers race", func(t *testing.T) {
		// Readers keep lower handles open while writers append: every
		// open succeeds, and every read is a prefix state of the file.
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for r := 0; r < 4; r++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 50; i++ {
					data, err := os.ReadFile(p("raced"))
					if err != nil {
						errs <- fmt.Errorf("read: %v", err)
						return
					}
					if !strings.HasPrefix(string(data), "r\n") || strings.Trim(string(data[2:]), "w\n") != "" {
						errs <- fmt.Errorf("read %q: not a state the file had", data)
						return
					}
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				f, err := os.OpenFile(p("raced"), os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					errs <- fmt.Errorf("open for append: %v", err)
					return
				}
				_, err = f.WriteString("w\n")
				f.Close()
				if err != nil {
					errs <- fmt.Errorf("append: %v", err)
					return
				}
			}
		}()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		got, err := os.ReadFile(p("raced"))
		if want := "r\n" + strings.Repeat("w\n", 20); err != nil || string(got) != want {
			t.Errorf("after the race the file reads %q, %v; want %q", got, err, want)
		}
	})
}
