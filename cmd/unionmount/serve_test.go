package main

import (
	"io"
	"log"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeServer stands in for *fuse.Server: Wait returns once end is called,
// as the real one does when the kernel ends the session.
type fakeServer struct {
	unmountErr error
	unmounts   atomic.Int32
	done       chan struct{}
	once       sync.Once
}

func newFakeServer(unmountErr error) *fakeServer {
	return &fakeServer{unmountErr: unmountErr, done: make(chan struct{})}
}

func (f *fakeServer) end() { f.once.Do(func() { close(f.done) }) }

func (f *fakeServer) Unmount() error {
	f.unmounts.Add(1)
	if f.unmountErr != nil {
		return f.unmountErr
	}
	f.end()
	return nil
}

func (f *fakeServer) Wait() { <-f.done }

// serveAsync runs serve and returns a channel closed when it returns.
func serveAsync(srv server, sigs <-chan os.Signal, detach func() error) <-chan struct{} {
	returned := make(chan struct{})
	go func() {
		serve(srv, sigs, detach, log.New(io.Discard, "", 0))
		close(returned)
	}()
	return returned
}

// waitFor fails the test if ch is not closed within a generous deadline;
// the deadline only turns a hang into a failure.
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: still waiting after 10s", what)
	}
}

func TestServeEndsOnExternalUnmount(t *testing.T) {
	srv := newFakeServer(nil)
	var detached atomic.Bool
	returned := serveAsync(srv, make(chan os.Signal), func() error { detached.Store(true); return nil })
	srv.end() // fusermount3 -u MNT
	waitFor(t, returned, "serve after fusermount3 -u")
	if n := srv.unmounts.Load(); n != 0 || detached.Load() {
		t.Errorf("Unmount called %d times, detached %v; want neither", n, detached.Load())
	}
}

func TestServeUnmountsOnSignal(t *testing.T) {
	for _, sig := range []os.Signal{syscall.SIGINT, syscall.SIGTERM} {
		srv := newFakeServer(nil)
		sigs := make(chan os.Signal, 1)
		returned := serveAsync(srv, sigs, func() error { t.Error("detach called; want a plain unmount"); return nil })
		sigs <- sig
		waitFor(t, returned, "serve after "+sig.String())
		if n := srv.unmounts.Load(); n != 1 {
			t.Errorf("%v: Unmount called %d times; want 1", sig, n)
		}
	}
}

func TestServeDetachesWhenBusy(t *testing.T) {
	srv := newFakeServer(syscall.EBUSY)
	sigs := make(chan os.Signal, 1)
	var detaches atomic.Int32
	returned := serveAsync(srv, sigs, func() error {
		detaches.Add(1)
		srv.end() // the last user of the detached mount closes it
		return nil
	})
	sigs <- syscall.SIGTERM
	waitFor(t, returned, "serve after a busy unmount")
	if n, d := srv.unmounts.Load(), detaches.Load(); n != 1 || d != 1 {
		t.Errorf("Unmount called %d times, detach %d times; want 1 and 1", n, d)
	}
}

func TestServeSecondSignalReturns(t *testing.T) {
	srv := newFakeServer(syscall.EBUSY)
	sigs := make(chan os.Signal, 1)
	detached := make(chan struct{})
	returned := serveAsync(srv, sigs, func() error { close(detached); return syscall.EPERM })
	sigs <- syscall.SIGINT
	waitFor(t, detached, "detach after a busy unmount")
	sigs <- syscall.SIGINT
	waitFor(t, returned, "serve after a second SIGINT")
}
