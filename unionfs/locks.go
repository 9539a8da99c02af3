package unionfs

import "github.com/unionmount/unionmount/internal/lockrank"

// The lock order of doc.go, as ranks: a lock may be taken only while the
// locks its goroutine holds have lower ranks. Tests built with
// -tags lockcheck (make build-race) stop the daemon on an inversion.

type rankOpendirTable struct{} // noOpendir.mu

func (rankOpendirTable) Rank() int    { return 10 }
func (rankOpendirTable) Name() string { return "noOpendir.mu" }
func (rankOpendirTable) Nests() bool  { return false }

type rankDirSlot struct{} // dirSlot.mu

func (rankDirSlot) Rank() int    { return 20 }
func (rankDirSlot) Name() string { return "dirSlot.mu" }
func (rankDirSlot) Nests() bool  { return false }

type rankDirHandle struct{} // dirHandle.mu

func (rankDirHandle) Rank() int    { return 30 }
func (rankDirHandle) Name() string { return "dirHandle.mu" }
func (rankDirHandle) Nests() bool  { return false }

type rankCopy struct{} // node.copyMu

func (rankCopy) Rank() int    { return 40 }
func (rankCopy) Name() string { return "node.copyMu" }

// Nests: copyUp holds a node's copyMu while it copies the parent up.
func (rankCopy) Nests() bool { return true }

type rankLink struct{} // unionFS.linkMu

func (rankLink) Rank() int    { return 50 }
func (rankLink) Name() string { return "unionFS.linkMu" }
func (rankLink) Nests() bool  { return false }

type rankHandle struct{} // fileHandle.mu

func (rankHandle) Rank() int    { return 60 }
func (rankHandle) Name() string { return "fileHandle.mu" }
func (rankHandle) Nests() bool  { return false }

type rankNode struct{} // node.mu

func (rankNode) Rank() int    { return 70 }
func (rankNode) Name() string { return "node.mu" }
func (rankNode) Nests() bool  { return false }

type rankIO struct{} // node.ioMu

func (rankIO) Rank() int    { return 80 }
func (rankIO) Name() string { return "node.ioMu" }
func (rankIO) Nests() bool  { return false }

type rankFds struct{} // dirFds.mu

func (rankFds) Rank() int    { return 90 }
func (rankFds) Name() string { return "dirFds.mu" }
func (rankFds) Nests() bool  { return false }

type rankIno struct{} // inoMapper.mu

func (rankIno) Rank() int    { return 100 }
func (rankIno) Name() string { return "inoMapper.mu" }
func (rankIno) Nests() bool  { return false }

var (
	_ lockrank.Ranker = rankOpendirTable{}
	_ lockrank.Ranker = rankIno{}
)
