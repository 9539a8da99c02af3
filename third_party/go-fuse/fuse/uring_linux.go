// FUSE over io_uring (unionmount addition, not in upstream go-fuse).
//
// The kernel (6.14+, CONFIG_FUSE_IO_URING, enable_uring=Y) can hand
// requests to the server through io_uring instead of read(2) on
// /dev/fuse: the server registers entries (a header buffer and a payload
// buffer each) on one queue per possible CPU with
// FUSE_IO_URING_CMD_REGISTER; a request from a task on CPU n fills an
// entry of queue n and completes its command; the server answers in the
// same buffers and submits FUSE_IO_URING_CMD_COMMIT_AND_FETCH, which
// delivers the reply and waits for the next request in one system call.
// See the kernel's Documentation/filesystems/fuse-io-uring.rst and
// include/uapi/linux/fuse.h.
//
// Here each queue has its own ring and one goroutine locked to an OS
// thread pinned to the queue's CPU, which serves the requests of its
// entries inline: no hand-off between the goroutine that receives a
// request and the one that answers it. FORGET and INTERRUPT still come
// through /dev/fuse, and so do notifications to the kernel, so the
// classic reader loop keeps running beside the rings.

package fuse

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// uringDepth is the number of entries per queue. A queue's thread
	// serves one request at a time; the other entries hold requests
	// the kernel sends meanwhile, ready for the thread's next wait.
	uringDepth = 4

	// io_uring ABI (include/uapi/linux/io_uring.h).
	ioringSetupCQSize     = 1 << 3
	ioringSetupSQE128     = 1 << 10
	ioringFeatSingleMmap  = 1 << 0
	ioringOffSQRing       = 0
	ioringOffCQRing       = 0x8000000
	ioringOffSQEs         = 0x10000000
	ioringEnterGetEvents  = 1
	ioringOpUringCmd      = 46
	ioringSQESize         = 128 // with IORING_SETUP_SQE128
	ioringCQESize         = 16
	ioringSQECmdOffset    = 48 // start of the command area in an SQE
	fuseURingCmdRegister  = 1
	fuseURingCmdCommit    = 2
	fuseURingHeaderSize   = 288 // struct fuse_uring_req_header
	fuseURingOpInOffset   = 128 // fuse_uring_req_header.op_in
	fuseURingOpInSize     = 128
	fuseURingEntInOutOffs = 256 // fuse_uring_req_header.ring_ent_in_out
	sizeOfInHeader        = int(unsafe.Sizeof(InHeader{}))
)

type ioUringParams struct {
	SqEntries, CqEntries, Flags, SqThreadCPU, SqThreadIdle, Features, WqFd uint32
	Resv                                                                   [3]uint32
	SqOff                                                                  struct {
		Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
		UserAddr                                                        uint64
	}
	CqOff struct {
		Head, Tail, RingMask, RingEntries, Overflow, Cqes, Flags, Resv1 uint32
		UserAddr                                                        uint64
	}
}

// fuseURingEntInOut is struct fuse_uring_ent_in_out.
type fuseURingEntInOut struct {
	Flags     uint64
	CommitID  uint64
	PayloadSz uint32
	Padding   uint32
	Reserved  uint64
}

// uringState is the Server's io_uring transport.
type uringState struct {
	queues    []*uringQueue
	transport string // what Transport reports
	served    atomic.Uint64
}

// Transport says how requests reach the server: "io_uring (N queues ×
// D entries)", or "/dev/fuse" with the reason io_uring is not used when
// MountOptions.IoUring asked for it.
func (ms *Server) Transport() string {
	if ms.uring.transport == "" {
		return "/dev/fuse"
	}
	return ms.uring.transport
}

// UsesIoUring reports whether the kernel takes requests through the
// server's rings.
func (ms *Server) UsesIoUring() bool {
	return len(ms.uring.queues) > 0
}

// IoUringRequests is the number of requests served through the rings.
func (ms *Server) IoUringRequests() uint64 {
	return ms.uring.served.Load()
}

// uringSetup makes the rings when io_uring is asked for, and asks the
// kernel for it at INIT only then: a kernel that agrees holds every
// request until the rings are registered, so there must be rings to
// register (or to have refused) once INIT is answered.
func (ms *Server) uringSetup() {
	if !ms.opts.IoUring {
		return
	}
	ms.uring.transport = "/dev/fuse"
	n, err := possibleCPUs()
	if err != nil {
		ms.uring.transport = fmt.Sprintf("/dev/fuse (io_uring not tried: %v)", err)
		return
	}
	page := os.Getpagesize()
	maxPages := (ms.opts.MaxWrite-1)/page + 1 // as doInit asks
	payload := max(_FUSE_MIN_READ_BUFFER, ms.opts.MaxWrite, maxPages*page)
	payload = (payload + page - 1) / page * page
	for qid := 0; qid < n; qid++ {
		q, err := newURingQueue(ms, qid, payload)
		if err != nil {
			ms.uringClose()
			ms.uring.transport = fmt.Sprintf("/dev/fuse (io_uring: %v)", err)
			return
		}
		ms.uring.queues = append(ms.uring.queues, q)
	}
	ms.opts.ExtraCapabilities |= CAP_OVER_IO_URING
}

// uringStart registers the rings after INIT, when the kernel agreed to
// io_uring, and starts their threads. When the kernel did not agree or
// refuses a registration, requests keep coming through /dev/fuse.
func (ms *Server) uringStart() {
	if len(ms.uring.queues) == 0 {
		return
	}
	if ms.negotiatedFlags&CAP_OVER_IO_URING == 0 {
		ms.uringClose()
		ms.uring.transport = "/dev/fuse (io_uring not offered by the kernel: is /sys/module/fuse/parameters/enable_uring Y?)"
		return
	}
	fd := -1
	ms.fuseFD.withFD(func(f int) { fd = f })
	var failed error
	started := 0
	for _, q := range ms.uring.queues {
		q.fuseFD = fd
		ready := make(chan error, 1)
		ms.fuseFD.loops.Add(1)
		go q.loop(ready)
		started++
		if err := <-ready; err != nil {
			failed = err
			break
		}
	}
	if failed != nil {
		// The kernel turned io_uring off for this connection when it
		// refused; the queues registered before stay idle until the
		// unmount ends them.
		ms.uring.transport = fmt.Sprintf("/dev/fuse (io_uring refused: %v)", failed)
		ms.uring.queues = nil
		return
	}
	ms.uring.transport = fmt.Sprintf("io_uring (%d queues × %d entries)", len(ms.uring.queues), uringDepth)
}

// uringClose releases rings that were never started.
func (ms *Server) uringClose() {
	for _, q := range ms.uring.queues {
		q.close()
	}
	ms.uring.queues = nil
}

// possibleCPUs is the kernel's num_possible_cpus(), the number of queues
// it expects.
func possibleCPUs() (int, error) {
	b, err := os.ReadFile("/sys/devices/system/cpu/possible")
	if err != nil {
		return 0, err
	}
	return parseCPUList(string(b))
}

// parseCPUList returns one more than the highest CPU of a kernel CPU list
// ("0-3", "0,2-5\n").
func parseCPUList(b string) (int, error) {
	n := 0
	for _, r := range strings.Split(strings.TrimSpace(b), ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return 0, fmt.Errorf("parse %q: %v", b, err)
		}
		z := a
		if isRange {
			if z, err = strconv.Atoi(hi); err != nil {
				return 0, fmt.Errorf("parse %q: %v", b, err)
			}
		}
		n = max(n, z+1)
	}
	if n == 0 {
		return 0, fmt.Errorf("no possible CPUs in %q", b)
	}
	return n, nil
}

// ioRing is one io_uring instance, used by one thread.
type ioRing struct {
	fd             int
	sqRing, cqRing []byte
	sqes           []byte
	sqHead, sqTail *uint32
	sqMask         uint32
	sqArray        unsafe.Pointer
	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           unsafe.Pointer
	sqLocalTail    uint32
	toSubmit       uint32
}

func newIoRing(entries uint32) (*ioRing, error) {
	var p ioUringParams
	p.Flags = ioringSetupSQE128 | ioringSetupCQSize
	p.CqEntries = 2 * entries
	fd, _, errno := syscall.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &ioRing{fd: int(fd)}
	sqSize := int(p.SqOff.Array + p.SqEntries*4)
	cqSize := int(p.CqOff.Cqes + p.CqEntries*ioringCQESize)
	if p.Features&ioringFeatSingleMmap != 0 {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	if r.sqRing, err = unix.Mmap(r.fd, ioringOffSQRing, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		r.close()
		return nil, fmt.Errorf("mmap io_uring SQ ring: %w", err)
	}
	r.cqRing = r.sqRing
	if p.Features&ioringFeatSingleMmap == 0 {
		if r.cqRing, err = unix.Mmap(r.fd, ioringOffCQRing, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
			r.close()
			return nil, fmt.Errorf("mmap io_uring CQ ring: %w", err)
		}
	}
	if r.sqes, err = unix.Mmap(r.fd, ioringOffSQEs, int(p.SqEntries)*ioringSQESize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		r.close()
		return nil, fmt.Errorf("mmap io_uring SQEs: %w", err)
	}
	at := func(b []byte, off uint32) unsafe.Pointer { return unsafe.Pointer(&b[off]) }
	r.sqHead = (*uint32)(at(r.sqRing, p.SqOff.Head))
	r.sqTail = (*uint32)(at(r.sqRing, p.SqOff.Tail))
	r.sqMask = *(*uint32)(at(r.sqRing, p.SqOff.RingMask))
	r.sqArray = at(r.sqRing, p.SqOff.Array)
	r.cqHead = (*uint32)(at(r.cqRing, p.CqOff.Head))
	r.cqTail = (*uint32)(at(r.cqRing, p.CqOff.Tail))
	r.cqMask = *(*uint32)(at(r.cqRing, p.CqOff.RingMask))
	r.cqes = at(r.cqRing, p.CqOff.Cqes)
	r.sqLocalTail = atomic.LoadUint32(r.sqTail)
	return r, nil
}

func (r *ioRing) close() {
	if r.sqes != nil {
		unix.Munmap(r.sqes)
	}
	if r.cqRing != nil && &r.cqRing[0] != &r.sqRing[0] {
		unix.Munmap(r.cqRing)
	}
	if r.sqRing != nil {
		unix.Munmap(r.sqRing)
	}
	unix.Close(r.fd)
}

// sqe returns the next free submission entry, zeroed, and queues it for
// the next enter. The ring has as many entries as there are commands,
// so it is never full.
func (r *ioRing) sqe() []byte {
	idx := r.sqLocalTail & r.sqMask
	s := r.sqes[int(idx)*ioringSQESize : int(idx+1)*ioringSQESize]
	clear(s)
	*(*uint32)(unsafe.Add(r.sqArray, 4*idx)) = idx
	r.sqLocalTail++
	atomic.StoreUint32(r.sqTail, r.sqLocalTail)
	r.toSubmit++
	return s
}

// enter submits the queued entries and, when wait, waits for at least
// one completion.
func (r *ioRing) enter(wait bool) error {
	for {
		var minComplete, flags uintptr
		if wait {
			minComplete, flags = 1, ioringEnterGetEvents
		}
		n, _, errno := syscall.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(r.toSubmit), minComplete, flags, 0, 0)
		if errno == 0 || errno == syscall.EINTR {
			if errno == 0 {
				r.toSubmit -= uint32(n)
			}
			if errno == 0 && (r.toSubmit == 0 || !wait) {
				return nil
			}
			if errno == syscall.EINTR && r.toSubmit == 0 && r.ready() {
				return nil
			}
			continue
		}
		return fmt.Errorf("io_uring_enter: %w", errno)
	}
}

// ready reports whether a completion is waiting.
func (r *ioRing) ready() bool {
	return atomic.LoadUint32(r.cqHead) != atomic.LoadUint32(r.cqTail)
}

// completions calls f for each waiting completion and consumes them.
func (r *ioRing) completions(f func(userData uint64, res int32)) {
	head := atomic.LoadUint32(r.cqHead)
	tail := atomic.LoadUint32(r.cqTail)
	for ; head != tail; head++ {
		cqe := unsafe.Add(r.cqes, uintptr(head&r.cqMask)*ioringCQESize)
		f(*(*uint64)(cqe), *(*int32)(unsafe.Add(cqe, 8)))
	}
	atomic.StoreUint32(r.cqHead, head)
}

// uringQueue is the ring of one CPU and its entries.
type uringQueue struct {
	ms     *Server
	qid    int
	fuseFD int
	ring   *ioRing
	ents   []*uringEnt
	page   int
}

// uringEnt is one registered entry: one mapping whose first page holds
// the fuse_uring_req_header and the iovecs given at registration, and
// whose following pages are the payload buffer. The request's header and
// opcode struct are copied just below the payload, so that go-fuse sees
// the request as one contiguous buffer as read from /dev/fuse.
type uringEnt struct {
	mem      []byte
	payload  []byte
	commitID uint64
}

func newURingQueue(ms *Server, qid, payload int) (*uringQueue, error) {
	r, err := newIoRing(uringDepth)
	if err != nil {
		return nil, err
	}
	q := &uringQueue{ms: ms, qid: qid, ring: r, page: os.Getpagesize()}
	for i := 0; i < uringDepth; i++ {
		mem, err := unix.Mmap(-1, 0, q.page+payload, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			q.close()
			return nil, fmt.Errorf("mmap io_uring buffers: %w", err)
		}
		q.ents = append(q.ents, &uringEnt{mem: mem, payload: mem[q.page:]})
	}
	return q, nil
}

func (q *uringQueue) close() {
	for _, e := range q.ents {
		unix.Munmap(e.mem)
	}
	q.ents = nil
	q.ring.close()
}

func (q *uringQueue) cmdSQE(op uint32, ent int, commitID uint64) []byte {
	s := q.ring.sqe()
	s[0] = ioringOpUringCmd
	*(*int32)(unsafe.Pointer(&s[4])) = int32(q.fuseFD)
	*(*uint32)(unsafe.Pointer(&s[8])) = op
	*(*uint64)(unsafe.Pointer(&s[32])) = uint64(ent)
	cmd := s[ioringSQECmdOffset:]
	*(*uint64)(unsafe.Pointer(&cmd[8])) = commitID
	*(*uint16)(unsafe.Pointer(&cmd[16])) = uint16(q.qid)
	return s
}

// loop registers the queue's entries, reports how that went on ready,
// and serves requests until the connection ends.
func (q *uringQueue) loop(ready chan<- error) {
	// The thread stays locked: it dies with the goroutine, and the
	// kernel's task work for the ring runs on it.
	runtime.LockOSThread()
	defer q.ms.fuseFD.loops.Done()
	defer q.close()
	var cpus unix.CPUSet
	cpus.Set(q.qid)
	_ = unix.SchedSetaffinity(0, &cpus) // a CPU we may not use: serve unpinned

	for i, e := range q.ents {
		iov := (*[2]unix.Iovec)(unsafe.Pointer(&e.mem[512]))
		iov[0].Base = &e.mem[0]
		iov[0].SetLen(fuseURingHeaderSize)
		iov[1].Base = &e.payload[0]
		iov[1].SetLen(len(e.payload))
		s := q.cmdSQE(fuseURingCmdRegister, i, 0)
		*(*uint64)(unsafe.Pointer(&s[16])) = uint64(uintptr(unsafe.Pointer(iov)))
		*(*uint32)(unsafe.Pointer(&s[24])) = 2
	}
	if err := q.ring.enter(false); err != nil {
		ready <- err
		return
	}
	// A refused registration completes at once, with the error; an
	// accepted one completes when a request arrives.
	var refused error
	head := atomic.LoadUint32(q.ring.cqHead)
	for tail := atomic.LoadUint32(q.ring.cqTail); head != tail; head++ {
		cqe := unsafe.Add(q.ring.cqes, uintptr(head&q.ring.cqMask)*ioringCQESize)
		if res := *(*int32)(unsafe.Add(cqe, 8)); res < 0 {
			refused = fmt.Errorf("queue %d: register: %w", q.qid, syscall.Errno(-res))
		}
	}
	ready <- refused
	if refused != nil {
		return
	}

	for {
		if err := q.ring.enter(true); err != nil {
			q.ms.opts.Logger.Printf("io_uring queue %d: %v", q.qid, err)
			return
		}
		var stop error
		q.ring.completions(func(ud uint64, res int32) {
			if stop != nil {
				return
			}
			i := int(ud)
			switch {
			case res == 0:
				q.serve(i)
			case res == -int32(syscall.EINTR) || res == -int32(syscall.EAGAIN):
				q.cmdSQE(fuseURingCmdCommit, i, q.ents[i].commitID)
			default:
				stop = syscall.Errno(-res)
			}
		})
		if stop != nil {
			// ENOTCONN: the connection ended (unmount, abort).
			if !errors.Is(stop, syscall.ENOTCONN) || q.ms.opts.Debug {
				q.ms.opts.Logger.Printf("io_uring queue %d: %v, thread exiting", q.qid, stop)
			}
			return
		}
	}
}

// serve answers the request in entry i and queues its commit.
func (q *uringQueue) serve(i int) {
	ms := q.ms
	e := q.ents[i]
	hdr := e.mem[:fuseURingHeaderSize]
	inOut := (*fuseURingEntInOut)(unsafe.Pointer(&hdr[fuseURingEntInOutOffs]))
	e.commitID = inOut.CommitID
	inH := (*InHeader)(unsafe.Pointer(&hdr[0]))
	payloadSz := int(inOut.PayloadSz)
	opSz := int(inH.Length) - sizeOfInHeader - payloadSz
	unique := inH.Unique

	out := (*OutHeader)(unsafe.Pointer(&hdr[0]))
	if opSz < 0 || opSz > fuseURingOpInSize || payloadSz > len(e.payload) {
		ms.opts.Logger.Printf("io_uring: malformed request (length %d, payload %d)", inH.Length, payloadSz)
		*out = OutHeader{Length: uint32(unsafe.Sizeof(OutHeader{})), Status: -int32(EIO), Unique: unique}
		inOut.PayloadSz = 0
		q.cmdSQE(fuseURingCmdCommit, i, e.commitID)
		return
	}
	start := q.page - sizeOfInHeader - opSz
	copy(e.mem[start:], hdr[:sizeOfInHeader])
	copy(e.mem[start+sizeOfInHeader:], hdr[fuseURingOpInOffset:fuseURingOpInOffset+opSz])

	req := ms.reqPool.Get().(*requestAlloc)
	req.inputBuf = e.mem[start : q.page+payloadSz]
	if ms.opts.SingleThreaded {
		ms.requestProcessingMu.Lock()
	}
	ms.processRequest(req, e.payload)
	n, status := q.replyPayload(req, e.payload)
	if ms.opts.SingleThreaded {
		ms.requestProcessingMu.Unlock()
	}
	*out = OutHeader{Length: uint32(int(unsafe.Sizeof(OutHeader{})) + n), Status: -int32(status), Unique: unique}
	inOut.PayloadSz = uint32(n)
	ms.uringReturnRequest(req)
	ms.uring.served.Add(1)
	q.cmdSQE(fuseURingCmdCommit, i, e.commitID)
}

// replyPayload puts the reply's opcode struct and payload in buf, and
// returns their size and the reply's status.
func (q *uringQueue) replyPayload(req *requestAlloc, buf []byte) (int, Status) {
	if req.suppressReply {
		// Nothing to answer, but the entry must go back to the kernel.
		return 0, OK
	}
	status := req.status
	n := copy(buf, req.outDataBuf)
	if req.readResult != nil {
		rr := req.readResult
		req.readResult = nil
		defer rr.Done()
		if status > OK {
			return 0, status
		}
		if ws, ok := rr.(withSlice); ok {
			slices, st := ws.Slices()
			if !st.Ok() {
				return 0, st
			}
			for _, s := range slices {
				n += copy(buf[n:], s)
			}
			return n, status
		}
		b, st := rr.Bytes(buf[n:])
		if !st.Ok() {
			return 0, st
		}
		if !sameStart(b, buf[n:]) {
			copy(buf[n:], b)
		}
		return n + len(b), status
	}
	if status > OK {
		return 0, status
	}
	if !sameStart(req.outPayload, buf[n:]) {
		copy(buf[n:], req.outPayload)
	}
	return n + len(req.outPayload), status
}

// sameStart reports whether a and b start at the same byte (a payload
// the handler wrote in place).
func sameStart(a, b []byte) bool {
	return len(a) > 0 && len(b) > 0 && &a[0] == &b[0]
}

// uringReturnRequest returns a request served from a ring to the pool:
// fuseFD.returnRequest without the /dev/fuse reader accounting.
func (ms *Server) uringReturnRequest(req *requestAlloc) {
	if req.bufferPoolOutputBuf != nil {
		ms.buffers.FreeBuffer(req.bufferPoolOutputBuf)
		req.bufferPoolOutputBuf = nil
	}
	if req.interrupted {
		req.interrupted = false
		req.cancel = make(chan struct{})
	}
	req.clear()
	ms.reqPool.Put(req)
}
