package main

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/unionmount/unionmount/unionfs"
)

// fakeFile is the fs.FileInfo of a fusermount3 binary.
type fakeFile struct {
	mode fs.FileMode
	uid  uint32
}

func (f fakeFile) Name() string       { return "fusermount3" }
func (f fakeFile) Size() int64        { return 1 }
func (f fakeFile) Mode() fs.FileMode  { return f.mode }
func (f fakeFile) ModTime() time.Time { return time.Time{} }
func (f fakeFile) IsDir() bool        { return false }
func (f fakeFile) Sys() any           { return &syscall.Stat_t{Uid: f.uid} }

// goodHost has everything a rootless mount needs.
func goodHost() hostProbe {
	return hostProbe{
		openFuse: func() error { return nil },
		fusermount: func() (string, fs.FileInfo, error) {
			return "/usr/bin/fusermount3", fakeFile{mode: 0o755 | fs.ModeSetuid, uid: 0}, nil
		},
		fuseConf:    func() ([]byte, error) { return []byte("# comment\n user_allow_other \n"), nil },
		ownsMountNS: func() (bool, error) { return true, nil },
	}
}

func TestCheckHost(t *testing.T) {
	for _, tc := range []struct {
		name       string
		euid       int
		userNS     bool
		allowOther bool
		change     func(*hostProbe)
		want       string // "" means no error
	}{
		{name: "user, all there", euid: 1000, allowOther: true},
		{name: "root, all there"},
		{name: "namespace root, all there", userNS: true},
		{name: "fuse 0600 for a user", euid: 1000,
			change: func(h *hostProbe) {
				h.openFuse = func() error { return &os.PathError{Op: "open", Path: "/dev/fuse", Err: syscall.EACCES} }
			},
			want: msgFuseDenied},
		{name: "fuse 0600 for namespace root", userNS: true,
			change: func(h *hostProbe) { h.openFuse = func() error { return syscall.EACCES } },
			want:   msgFuseDenied},
		{name: "fuse refused to real root",
			change: func(h *hostProbe) { h.openFuse = func() error { return syscall.EPERM } },
			want:   msgFuseDeniedRoot},
		{name: "no fuse node", euid: 1000,
			change: func(h *hostProbe) { h.openFuse = func() error { return syscall.ENOENT } },
			want:   msgFuseMissing},
		{name: "no fuse module", euid: 1000,
			change: func(h *hostProbe) { h.openFuse = func() error { return syscall.ENODEV } },
			want:   msgFuseNoDevice},
		{name: "no fusermount3", euid: 1000,
			change: func(h *hostProbe) {
				h.fusermount = func() (string, fs.FileInfo, error) { return "", nil, fs.ErrNotExist }
			},
			want: msgNoFusermount},
		{name: "fusermount3 not setuid", euid: 1000,
			change: func(h *hostProbe) {
				h.fusermount = func() (string, fs.FileInfo, error) { return "/x/fusermount3", fakeFile{mode: 0o755}, nil }
			},
			want: "/x/fusermount3 is not setuid root (mode -rwxr-xr-x, owner uid 0)"},
		{name: "fusermount3 setuid to a user", euid: 1000,
			change: func(h *hostProbe) {
				h.fusermount = func() (string, fs.FileInfo, error) {
					return "/x/fusermount3", fakeFile{mode: 0o755 | fs.ModeSetuid, uid: 1000}, nil
				}
			},
			want: "is not setuid root"},
		{name: "root needs no fusermount3",
			change: func(h *hostProbe) {
				h.fusermount = func() (string, fs.FileInfo, error) { return "", nil, fs.ErrNotExist }
			}},
		{name: "allow_other without user_allow_other", euid: 1000, allowOther: true,
			change: func(h *hostProbe) { h.fuseConf = func() ([]byte, error) { return []byte("#user_allow_other\n"), nil } },
			want:   msgUserAllowOther},
		{name: "allow_other without fuse.conf", euid: 1000, allowOther: true,
			change: func(h *hostProbe) { h.fuseConf = func() ([]byte, error) { return nil, fs.ErrNotExist } },
			want:   msgUserAllowOther},
		{name: "no allow_other, no user_allow_other", euid: 1000,
			change: func(h *hostProbe) { h.fuseConf = func() ([]byte, error) { return nil, fs.ErrNotExist } }},
		{name: "user namespace without its mount namespace", userNS: true,
			change: func(h *hostProbe) { h.ownsMountNS = func() (bool, error) { return false, nil } },
			want:   msgMountNSNotOwned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := goodHost()
			if tc.change != nil {
				tc.change(&h)
			}
			opts := unionfs.Options{AllowOther: tc.allowOther}
			err := checkHost(&opts, tc.euid, tc.userNS, h)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("checkHost: %v; want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("checkHost: %v; want %q", err, tc.want)
			}
		})
	}
}

// TestOwnsMountNamespace: the test's own namespaces are the initial ones,
// where the user namespace owns the mount namespace.
func TestOwnsMountNamespace(t *testing.T) {
	if inUserNamespace() {
		t.Skip("deliberate: runs in a user namespace, where the answer depends on how it was made (CI runs in the initial namespaces, where the test runs)")
	}
	owned, err := ownsMountNamespace()
	if err != nil || !owned {
		t.Errorf("ownsMountNamespace() = %v, %v; want true in the initial namespaces", owned, err)
	}
}

func TestExplainMountError(t *testing.T) {
	base := errors.New("fusermount exited with code 256\n")
	err := explainMountError(&os.PathError{Op: "mount", Path: "/m", Err: base})
	if got := err.Error(); !strings.HasSuffix(got, "code 256; fusermount3 printed the reason: run unionmount with -f to see it") {
		t.Errorf("explainMountError: %q", got)
	}
	if !errors.Is(err, base) {
		t.Errorf("explainMountError lost the wrapped error")
	}
	other := errors.New("mount: no such device")
	if explainMountError(other) != other || explainMountError(nil) != nil {
		t.Errorf("explainMountError changed an error it has nothing to add to")
	}
}

// TestHostErrorExitStatus: a host problem is a failure to mount (exit 1,
// one line), not a usage error. internal/rootless runs the real binary on
// hosts that lack each piece.
func TestHostErrorExitStatus(t *testing.T) {
	var stderr strings.Builder
	if code := exitStatus(&stderr, errors.New(msgFuseDenied)); code != exitFailure {
		t.Errorf("exit status %d; want %d", code, exitFailure)
	}
	if got := stderr.String(); got != "unionmount: "+msgFuseDenied+"\n" {
		t.Errorf("stderr %q", got)
	}
}
