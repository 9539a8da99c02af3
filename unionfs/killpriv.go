package unionfs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// killPriv clears setuid and setgid where the kernel leaves it to us
// (FUSE_HANDLE_KILLPRIV_V2, which Mount asks for).
//
// Without it the kernel asks for security.capability before every write
// (a GETXATTR round trip per write(2)) and refreshes the attributes before
// a chown. With it the kernel sets SB_NOSEC and tells us instead, by a flag
// on the request, when a caller without CAP_FSETID writes, truncates or
// opens with O_TRUNC; the daemon then clears setuid, and setgid when the
// group may execute (the rule the flag's documentation states). What the
// daemon does on the upper file clears security.capability itself (any
// write or truncate of a real file does), and chown clears setuid and
// setgid on a real file whoever calls it.
//
// Writes of a passthrough handle never reach the daemon, so a file with
// setuid or setgid opens for writing without passthrough (node.handle).
type killPriv struct {
	fuse.RawFileSystem
}

// kill clears setuid (and setgid with group execute) of node.
func (k *killPriv) kill(cancel <-chan struct{}, hdr fuse.InHeader, out *fuse.AttrOut) {
	var attr fuse.AttrOut
	if st := k.RawFileSystem.GetAttr(cancel, &fuse.GetAttrIn{InHeader: hdr}, &attr); !st.Ok() {
		return
	}
	mode := attr.Mode
	if mode&syscall.S_IFMT != syscall.S_IFREG {
		return
	}
	want := mode &^ syscall.S_ISUID
	if mode&syscall.S_IXGRP != 0 {
		want &^= syscall.S_ISGID
	}
	if want == mode {
		return
	}
	in := fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: hdr, Valid: fuse.FATTR_MODE, Mode: want & 0o7777}}
	var res fuse.AttrOut
	if st := k.RawFileSystem.SetAttr(cancel, &in, &res); st.Ok() && out != nil {
		*out = res
	}
}

func (k *killPriv) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	n, st := k.RawFileSystem.Write(cancel, in, data)
	if st.Ok() && n > 0 && in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		k.kill(cancel, in.InHeader, nil)
	}
	return n, st
}

func (k *killPriv) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	n, st := k.RawFileSystem.Writev(cancel, in, data)
	if st.Ok() && n > 0 && in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		k.kill(cancel, in.InHeader, nil)
	}
	return n, st
}

func (k *killPriv) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	kill := in.Valid&fuse.FATTR_KILL_SUIDGID != 0
	in.Valid &^= fuse.FATTR_KILL_SUIDGID
	st := k.RawFileSystem.SetAttr(cancel, in, out)
	if st.Ok() && kill {
		k.kill(cancel, in.InHeader, out)
	}
	return st
}

func (k *killPriv) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := k.RawFileSystem.Open(cancel, in, out)
	if st.Ok() && in.Mode&fuse.OPEN_KILL_SUIDGID != 0 {
		k.kill(cancel, in.InHeader, nil)
	}
	return st
}
