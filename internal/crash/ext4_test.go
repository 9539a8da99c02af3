package crash

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/testenv"
)

// ext4 is a small ext4 filesystem on a loop device, for an upper whose
// unflushed data a test must be able to lose.
//
// Killing the daemon alone loses nothing the daemon wrote: its writes
// sit in the kernel's page cache and reach the disk later whether or not
// it called fsync, so a test that only kills cannot tell fsync'd data
// from the rest. crash() does what a power cut does to this filesystem:
// EXT4_IOC_SHUTDOWN with EXT4_GOING_FLAGS_NOLOGFLUSH (xfstests'
// _scratch_shutdown, "godown") stops it without writing back dirty pages
// or committing the running journal transaction, then it is unmounted
// and mounted again, which replays the journal. What survives is what an
// fsync (or writeback that happened to run) put on the device. dm-flakey
// would do the same below the filesystem, but this kernel has no device
// mapper; the loop device's backing file stays in the host's page cache,
// which is the "disk" here and is not lost.
type ext4 struct {
	img, dir string
}

const (
	ext4IocShutdown = 0x8004587d // _IOR('X', 125, __u32)
	ext4NoLogFlush  = 0x2        // EXT4_GOING_FLAGS_NOLOGFLUSH
)

func newExt4(t *testing.T) *ext4 {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		testenv.Skipf(t, "needs mkfs.ext4 (apt-get install e2fsprogs)")
	}
	root := t.TempDir()
	fs := &ext4{img: filepath.Join(root, "upper.img"), dir: filepath.Join(root, "fs")}
	if err := os.Mkdir(fs.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fs.img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(fs.img, 64<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", fs.img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	fs.mount(t)
	t.Cleanup(func() {
		if err := unix.Unmount(fs.dir, 0); err != nil && err != unix.EINVAL {
			t.Errorf("unmount the ext4 upper: %v", err)
		}
	})
	return fs
}

func (fs *ext4) mount(t *testing.T) {
	t.Helper()
	// mount(8) sets up the loop device and frees it at unmount
	// (autoclear).
	if out, err := exec.Command("mount", "-o", "loop", fs.img, fs.dir).CombinedOutput(); err != nil {
		if strings.Contains(string(out), "loop") {
			testenv.Skipf(t, "needs a loop device: %s", out)
		}
		t.Fatalf("mount the ext4 upper: %v: %s", err, out)
	}
}

// sync makes everything written so far durable (syncfs).
func (fs *ext4) sync(t *testing.T) {
	t.Helper()
	fd, err := unix.Open(fs.dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		t.Fatalf("syncfs: %v", err)
	}
}

// crash shuts the filesystem down without flushing anything, and mounts
// it again: the state a power cut would leave.
func (fs *ext4) crash(t *testing.T) {
	t.Helper()
	fd, err := unix.Open(fs.dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	flags := uint32(ext4NoLogFlush)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ext4IocShutdown, uintptr(unsafe.Pointer(&flags)))
	unix.Close(fd)
	if errno != 0 {
		t.Fatalf("EXT4_IOC_SHUTDOWN: %v", errno)
	}
	// The killed daemon's FUSE connection lets go of the upper files it
	// passed through to the kernel (backing files) only as it is torn
	// down, after the daemon is reaped: until then the unmount is EBUSY.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := unix.Unmount(fs.dir, 0)
		if err == nil {
			break
		}
		if err != unix.EBUSY || time.Now().After(deadline) {
			t.Fatalf("unmount the shut down ext4: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // polling for the last reference to go, with a deadline
	}
	fs.mount(t)
}

// TestExt4CrashLosesUnflushedData checks the apparatus: a file written
// without fsync just before crash() is gone after it, one fsync'd is
// there. Without the first, TestKillDuringFsyncWrites could not fail.
func TestExt4CrashLosesUnflushedData(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skipf(t, "needs root to mount a loop device")
	}
	fs := newExt4(t)
	synced := filepath.Join(fs.dir, "synced")
	f, err := os.Create(synced)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("kept")
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// fsync of the file persists its name too on ext4 (the directory
	// entry is in the same journal transaction).
	if err := os.WriteFile(filepath.Join(fs.dir, "unsynced"), []byte("lost"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs.crash(t)
	if b, err := os.ReadFile(synced); err != nil || string(b) != "kept" {
		t.Errorf("fsync'd file after the crash: %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(fs.dir, "unsynced")); err == nil && len(b) > 0 {
		t.Errorf("a file written without fsync survived the crash with %q: crash() does not drop unflushed data", b)
	}
}
