package crash

import (
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/fstest"
)

// hungDaemons counts the killed daemons reap had to free (see
// TestKillDuringStartup).
var hungDaemons atomic.Int64

// reap waits for a daemon sent SIGKILL to exit. A daemon killed while it
// held a file of its own mount open hangs in its exit, closing that file
// (the FLUSH goes to itself); then reap aborts the mount's FUSE connection
// through /sys/fs/fuse/connections, which ends the request and the
// daemon, and reports true.
func reap(t *testing.T, u *fstest.Union, mnt string) (hung bool) {
	t.Helper()
	select {
	case <-u.Done():
		return false
	case <-time.After(3 * time.Second):
	}
	hungDaemons.Add(1)
	if err := fstest.AbortConnection(mnt); err != nil {
		t.Fatalf("killed daemon %d still there after 3s, and aborting its connection failed: %v", u.Pid, err)
	}
	select {
	case <-u.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("killed daemon %d still there 5s after aborting its FUSE connection", u.Pid)
	}
	t.Logf("killed daemon %d hung in its exit until its FUSE connection was aborted (known bug, TestKillDuringStartup)", u.Pid)
	return true
}

// TestKillDuringStartup: SIGKILL must end the daemon at any moment,
// start-up included. go-fuse's WaitMount (called by fs.Mount) runs a "poll
// hack" from the daemon itself: it opens .go-fuse-epoll-hack on the new
// mount, polls it and closes it. Killed while that file is open, the
// exiting daemon flushes it and waits for the answer from itself: it
// stays in D state, and the mount hangs, until someone aborts the FUSE
// connection. The daemon never needs its own mount; starting the server
// without WaitMount (fuse.NewServer, go Serve) avoids it.
func TestKillDuringStartup(t *testing.T) {
	fstest.RequireFUSE(t)
	rng := rand.New(rand.NewPCG(*seed, 5))
	tries := 40
	before := hungDaemons.Load()
	for i := 0; i < tries; i++ {
		d := newDirs(t)
		u := d.mount(t)
		time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond) // a kill point in the start-up
		if err := u.Kill(); err != nil {
			t.Fatal(err)
		}
		reap(t, u, d.mnt)
		if err := u.Unmount(); err != nil {
			t.Fatal(err)
		}
	}
	if n := hungDaemons.Load() - before; n > 0 {
		t.Errorf("%d of %d daemons killed during start-up hung in their exit", n, tries)
	}
}
