package unionfs

import (
	"sync"
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

	// plain holds the node ids known to have no bit to clear, so that the
	// writes of a caller without CAP_FSETID (all of them are flagged) cost
	// no stat. A mode or owner change comes only through SetAttr, which
	// forgets the node, as Forget does.
	plain sync.Map // node id -> struct{}
}

// kill clears setuid (and setgid with group execute) of node; fh, when
// not 0, is an open handle of it.
func (k *killPriv) kill(cancel <-chan struct{}, hdr fuse.InHeader, fh uint64, out *fuse.AttrOut) {
	if _, ok := k.plain.Load(hdr.NodeId); ok {
		return
	}
	in := fuse.GetAttrIn{InHeader: hdr}
	if fh != 0 {
		in.Flags_, in.Fh_ = fuse.FUSE_GETATTR_FH, fh
	}
	var attr fuse.AttrOut
	if st := k.RawFileSystem.GetAttr(cancel, &in, &attr); !st.Ok() {
		return
	}
	mode := attr.Mode
	want := mode &^ syscall.S_ISUID
	if mode&syscall.S_IXGRP != 0 {
		want &^= syscall.S_ISGID
	}
	if want == mode || mode&syscall.S_IFMT != syscall.S_IFREG {
		k.plain.Store(hdr.NodeId, struct{}{})
		return
	}
	set := fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: hdr, Valid: fuse.FATTR_MODE, Mode: want & 0o7777}}
	var res fuse.AttrOut
	if st := k.RawFileSystem.SetAttr(cancel, &set, &res); st.Ok() && out != nil {
		*out = res
	}
}

// wrote runs after a write: go-fuse calls Writev, and Write when that is
// not implemented.
func (k *killPriv) wrote(cancel <-chan struct{}, in *fuse.WriteIn, n uint32, st fuse.Status) (uint32, fuse.Status) {
	if st.Ok() && n > 0 && in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		k.kill(cancel, in.InHeader, in.Fh, nil)
	}
	return n, st
}

func (k *killPriv) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	n, st := k.RawFileSystem.Write(cancel, in, data)
	return k.wrote(cancel, in, n, st)
}

func (k *killPriv) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	n, st := k.RawFileSystem.Writev(cancel, in, data)
	return k.wrote(cancel, in, n, st)
}

func (k *killPriv) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	kill := in.Valid&fuse.FATTR_KILL_SUIDGID != 0
	in.Valid &^= fuse.FATTR_KILL_SUIDGID
	if in.Valid&(fuse.FATTR_MODE|fuse.FATTR_UID|fuse.FATTR_GID) != 0 {
		k.plain.Delete(in.NodeId)
	}
	st := k.RawFileSystem.SetAttr(cancel, in, out)
	if st.Ok() && kill {
		fh, _ := in.GetFh()
		k.kill(cancel, in.InHeader, fh, out)
	}
	return st
}

func (k *killPriv) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := k.RawFileSystem.Open(cancel, in, out)
	if st.Ok() && in.Mode&fuse.OPEN_KILL_SUIDGID != 0 {
		k.kill(cancel, in.InHeader, 0, nil)
	}
	return st
}

func (k *killPriv) Forget(node, nlookup uint64) {
	k.plain.Delete(node)
	k.RawFileSystem.Forget(node, nlookup)
}
