package main

import (
	"bytes"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"

	"github.com/unionmount/unionmount/unionfs"
)

// server is what serve needs of a *fuse.Server.
type server interface {
	Unmount() error
	Wait()
}

// mountAndServe mounts the union, tells report (the daemon's readiness
// pipe; nil in the foreground) how that went, and serves until the mount
// goes away.
func mountAndServe(cfg config, logger *log.Logger, report func(error)) error {
	// Catch the signals before mounting, so one that arrives while the
	// mount comes up unmounts it rather than killing us with it mounted.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	var stats statsSource

	cfg.opts.Logger = logger
	unmountLazy, err := mountLazyLowers(cfg.lazyLowers, cfg.opts.DirectMount, logger)
	if err != nil {
		if report != nil {
			report(err)
		}
		return err
	}
	// After the union is gone (or failed to mount): its lowers go.
	defer unmountLazy()
	srv, err := unionfs.Mount(cfg.mountpoint, cfg.opts)
	err = explainMountError(err)
	if err == nil && cfg.uring == uringOn && !srv.UsesIoUring() {
		err = fmt.Errorf("-o uring=on: requests would come through %s; as root, echo Y > %s, or pass uring=auto", srv.Transport(), enableURingParam)
		if uerr := srv.Unmount(); uerr != nil {
			logger.Printf("unmount %q: %v", cfg.mountpoint, uerr)
		}
		srv.Wait()
	}
	if report != nil {
		report(err)
	}
	if err != nil {
		return err
	}
	stats = srv
	go logStats(usr1, stats, logger)
	// go-fuse sized its readers to GOMAXPROCS when it mounted. Readers
	// wait in read(2) on /dev/fuse; with no idle P left the runtime's
	// sysmon hands their Ps off after 20 µs, and every request then wakes
	// through the scheduler's slow path. Two spare Ps keep the fast path:
	// a trivial request's round trip went from ~58 to ~47 µs on two cores.
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 2)
	if cfg.cpuProfile != "" {
		stop, err := startCPUProfile(cfg.cpuProfile)
		if err != nil {
			logger.Printf("%v; serving without a profile", err)
		} else {
			defer stop()
		}
	}
	if cfg.opts.Debug {
		logger.Printf("mounted %q: lowers %q, upper %q", cfg.mountpoint, cfg.opts.Lowers, cfg.opts.Upper)
		logger.Printf("transport: %s", srv.Transport())
	}
	serve(srv, sigs, func() error { return detach(cfg.mountpoint) }, logger)
	return nil
}

// serve waits until the mount is gone. `fusermount3 -u MNT` ends it from
// outside; SIGINT or SIGTERM unmount it from inside, lazily (detach) when
// it is busy, in which case the kernel ends the session once the last file
// on the mount is closed. A second signal returns without waiting.
func serve(srv server, sigs <-chan os.Signal, detach func() error, logger *log.Logger) {
	done := make(chan struct{})
	go func() {
		srv.Wait()
		close(done)
	}()

	select {
	case <-done:
		return
	case sig := <-sigs:
		logger.Printf("%v: unmounting", sig)
	}

	unmounted := make(chan error, 1)
	go func() { unmounted <- srv.Unmount() }()
	for {
		select {
		case <-done:
			return
		case err := <-unmounted:
			unmounted = nil
			if err == nil {
				continue // done follows
			}
			logger.Printf("unmount: %v; detaching: the mount goes away when its last user closes it", err)
			if err := detach(); err != nil {
				logger.Printf("%v; unmount by hand with fusermount3 -u -z", err)
			}
		case sig := <-sigs:
			logger.Printf("%v again: exiting without waiting for the unmount", sig)
			return
		}
	}
}

// enableURingParam is the switch of FUSE over io_uring (Linux 6.14+).
const enableURingParam = "/sys/module/fuse/parameters/enable_uring"

// statsSource is what logStats reads of a *fuse.Server.
type statsSource interface {
	IoUringRequests() uint64
}

// logStats writes one line per SIGUSR1 with the daemon's goroutine count,
// open descriptors and the requests served over io_uring: how tests (and
// users chasing a leak) read them from outside. The goroutine itself is
// one of those counted.
func logStats(sigs <-chan os.Signal, srv statsSource, logger *log.Logger) {
	for range sigs {
		fds := -1
		if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
			fds = len(ents) - 1 // less the descriptor ReadDir had open
		}
		logger.Printf("stats: %d goroutines, %d open fds, %d io_uring requests", runtime.NumGoroutine(), fds, srv.IoUringRequests())
	}
}

// startCPUProfile profiles the daemon into path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile %q: %w", path, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// detach unmounts mnt lazily (MNT_DETACH): umount(2) as root, else through
// the setuid fusermount3, like `umount -l` and `fusermount3 -u -z`.
func detach(mnt string) error {
	err := syscall.Unmount(mnt, syscall.MNT_DETACH)
	if err == nil {
		return nil
	}
	out, ferr := exec.Command("fusermount3", "-u", "-z", mnt).CombinedOutput()
	if ferr == nil {
		return nil
	}
	return fmt.Errorf("lazy unmount of %q: umount2: %v; fusermount3 -u -z: %v %s",
		mnt, err, ferr, bytes.TrimSpace(out))
}
