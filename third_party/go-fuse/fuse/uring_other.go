//go:build !linux

// FUSE over io_uring is Linux only (unionmount addition, not in upstream
// go-fuse); see uring_linux.go.

package fuse

type uringState struct{}

// Transport says how requests reach the server.
func (ms *Server) Transport() string { return "/dev/fuse" }

// UsesIoUring reports whether the kernel takes requests through rings.
func (ms *Server) UsesIoUring() bool { return false }

// IoUringRequests is the number of requests served through rings.
func (ms *Server) IoUringRequests() uint64 { return 0 }

func (ms *Server) uringSetup() {}
func (ms *Server) uringStart() {}
func (ms *Server) uringClose() {}
