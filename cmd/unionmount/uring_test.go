package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/fstest"
	"golang.org/x/sys/unix"
)

// uringParam reads the kernel's FUSE-over-io_uring switch: "" when the
// kernel has none (built without CONFIG_FUSE_IO_URING, or older than 6.14).
func uringParam(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(enableURingParam)
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// requireURing turns FUSE over io_uring on for the test, and back off at
// its end if it was off. It skips when the kernel does not have it; when
// it does but the switch cannot be turned, it skips too, and fails under
// CI=true.
func requireURing(t *testing.T) {
	t.Helper()
	skipUnlessFUSE(t)
	was := uringParam(t)
	switch was {
	case "":
		t.Skipf("needs FUSE over io_uring: no %s (Linux 6.14+ with CONFIG_FUSE_IO_URING)", enableURingParam)
	case "Y":
		return
	}
	if err := os.WriteFile(enableURingParam, []byte("Y"), 0); err != nil {
		msg := fmt.Sprintf("needs FUSE over io_uring on: %v (as root: echo Y > %s)", err, enableURingParam)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(enableURingParam, []byte(was), 0); err != nil {
			t.Errorf("restore %s to %s: %v", enableURingParam, was, err)
		}
	})
}

var (
	transportLine = regexp.MustCompile(`transport: (.*)`)
	statsLine     = regexp.MustCompile(`stats: \d+ goroutines, \d+ open fds, (\d+) io_uring requests`)
)

// transport waits for the daemon's "transport:" line (--debug), which it
// writes once the mount is up and INIT is answered, a moment after the
// mount shows in mountinfo.
func transport(t *testing.T, u *fstest.Union) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := transportLine.FindStringSubmatch(u.Output()); m != nil {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no transport line 10s after the mount; output:\n%.3000s", u.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// uringRequests asks the daemon how many requests its rings served.
func uringRequests(t *testing.T, u *fstest.Union) uint64 {
	t.Helper()
	before := len(statsLine.FindAllString(u.Output(), -1))
	if err := u.Cmd.Process.Signal(unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var all [][]string
	deadline := time.Now().Add(10 * time.Second)
	for {
		all = statsLine.FindAllStringSubmatch(u.Output(), -1)
		if len(all) > before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stats line 10s after SIGUSR1; output:\n%s", u.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
	n, err := strconv.ParseUint(all[before][1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestURingServesRequests: with --uring on, the daemon says it serves
// over io_uring, and the requests of a workload (here 200 lookups of
// missing names, which reach the daemon every time with --timeout 0, plus
// creates, writes, reads and a listing) are counted by the rings, not
// read from /dev/fuse.
func TestURingServesRequests(t *testing.T) {
	requireURing(t)
	root := t.TempDir()
	lower, upper, work, mnt := filepath.Join(root, "l"), filepath.Join(root, "u"), filepath.Join(root, "w"), filepath.Join(root, "m")
	for _, d := range []string{lower, upper, work, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(lower, "f"), []byte("lower\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	u := fstest.MountUnion(t, []string{lower}, upper, work, mnt, "--debug", "--uring", "on")
	if tr := transport(t, u); !strings.HasPrefix(tr, "io_uring") {
		t.Fatalf("--uring on: transport %q, want io_uring", tr)
	}

	start := uringRequests(t, u)
	const lookups = 200
	for i := 0; i < lookups; i++ {
		if _, err := os.Lstat(filepath.Join(mnt, fmt.Sprintf("missing%d", i))); !os.IsNotExist(err) {
			t.Fatalf("lstat of a missing name: %v", err)
		}
	}
	for i := 0; i < 20; i++ {
		p := filepath.Join(mnt, fmt.Sprintf("new%d", i))
		data := strings.Repeat("x", i*1000)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != data {
			t.Fatalf("read back %s: %d bytes, %v", p, len(got), err)
		}
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || string(got) != "lower\n" {
		t.Fatalf("read lower file: %q, %v", got, err)
	}
	ents, err := os.ReadDir(mnt)
	if err != nil || len(ents) != 21 {
		t.Fatalf("listing: %d entries, %v", len(ents), err)
	}
	served := uringRequests(t, u) - start
	if served < lookups {
		t.Errorf("the rings served %d requests during %d lookups and more: requests went through /dev/fuse", served, lookups)
	}
	t.Logf("%d requests served over io_uring", served)
}

// TestURingFallback: without io_uring in the kernel's offer, --uring auto
// serves through /dev/fuse and says why under --debug, and --uring on
// refuses to mount with the fix. With the switch on (make test-uring),
// --uring off still serves through /dev/fuse, and no request reaches a
// ring. The test never turns the switch off: other packages' mounts may
// rely on it.
func TestURingFallback(t *testing.T) {
	skipUnlessFUSE(t)
	root := t.TempDir()
	lower, mnt := filepath.Join(root, "l"), filepath.Join(root, "m")
	for _, d := range []string{lower, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if uringParam(t) == "Y" {
		u := fstest.MountUnion(t, []string{lower}, "", "", mnt, "--debug", "--uring", "off")
		if tr := transport(t, u); tr != "/dev/fuse" {
			t.Fatalf("--uring off: transport %q, want /dev/fuse", tr)
		}
		for i := 0; i < 10; i++ {
			os.Lstat(filepath.Join(mnt, fmt.Sprintf("missing%d", i)))
		}
		if n := uringRequests(t, u); n != 0 {
			t.Errorf("--uring off: %d requests served over io_uring", n)
		}
		return
	}

	u := fstest.MountUnion(t, []string{lower}, "", "", mnt, "--debug", "--uring", "auto")
	if tr := transport(t, u); !strings.HasPrefix(tr, "/dev/fuse (io_uring") {
		t.Fatalf("--uring auto without the kernel's offer: transport %q, want /dev/fuse and the reason", tr)
	}
	if _, err := os.Lstat(filepath.Join(mnt, "missing")); !os.IsNotExist(err) {
		t.Fatalf("lstat through the fallback: %v", err)
	}
	if err := u.Unmount(); err != nil {
		t.Fatal(err)
	}

	code, stderr := runUnionmount(t, root, "--uring", "on", "--lower", lower, mnt)
	if code != exitFailure || !strings.Contains(stderr, enableURingParam) {
		t.Errorf("--uring on without io_uring: exit %d, stderr %q; want %d and the fix", code, stderr, exitFailure)
	}
	if mounted(t, mnt) {
		unmountLazily(t, mnt)
		t.Errorf("--uring on without io_uring left a mount")
	}
}
