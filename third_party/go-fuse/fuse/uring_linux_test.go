package fuse_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

const enableURing = "/sys/module/fuse/parameters/enable_uring"

// TestIoUringLoopback mounts a loopback filesystem with
// MountOptions.IoUring, works in it, and checks that the requests were
// served through the rings. It needs root and a kernel with FUSE over
// io_uring; it turns the kernel's switch on for its duration.
func TestIoUringLoopback(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	b, err := os.ReadFile(enableURing)
	if err != nil {
		t.Skipf("kernel without FUSE over io_uring: %v", err)
	}
	if was := strings.TrimSpace(string(b)); was != "Y" {
		if err := os.WriteFile(enableURing, []byte("Y"), 0); err != nil {
			t.Skipf("turn FUSE over io_uring on: %v", err)
		}
		t.Cleanup(func() { os.WriteFile(enableURing, []byte(was), 0) })
	}

	dir, mnt := t.TempDir(), t.TempDir()
	root, err := fs.NewLoopbackRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := fuse.NewServer(fs.NewNodeFS(root, &fs.Options{}), mnt, &fuse.MountOptions{IoUring: true, MaxWrite: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	defer func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	}()
	if !srv.UsesIoUring() || !strings.HasPrefix(srv.Transport(), "io_uring") {
		t.Fatalf("transport %q, want io_uring", srv.Transport())
	}

	// Writes and reads around the payload buffer's size, a listing.
	for i, size := range []int{0, 1, 4096, 128 << 10, 1 << 20, 3<<20 + 17} {
		p := filepath.Join(mnt, fmt.Sprintf("f%d", i))
		data := bytes.Repeat([]byte{byte('a' + i)}, size)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back %d bytes: got %d bytes, %v", size, len(got), err)
		}
	}
	ents, err := os.ReadDir(mnt)
	if err != nil || len(ents) != 6 {
		t.Fatalf("listing: %d entries, %v", len(ents), err)
	}
	if _, err := os.Lstat(filepath.Join(mnt, "missing")); !os.IsNotExist(err) {
		t.Fatalf("lstat missing: %v", err)
	}
	if n := srv.IoUringRequests(); n < 20 {
		t.Errorf("%d requests served over io_uring", n)
	}
}
