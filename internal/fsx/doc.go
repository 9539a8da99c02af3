// Package fsx is a data-integrity exerciser in the spirit of xfstests' fsx
// (ltp/fsx.c): seeded random operations on a few files, each checked byte
// for byte against an in-memory model of what the file must hold.
//
// # Model
//
// Every file starts with a content the caller states (File.Initial; for a
// union test, what the lower layer holds). The model is that content as a
// byte slice, and each operation is applied to the file and to the model:
//
//	read       pread through a descriptor opened before the first write (on
//	           a union: before the copy-up) or the read-write one; compared
//	write      pwrite of a patterned buffer, possibly past the end
//	append     open(O_WRONLY|O_APPEND), write, close
//	truncate   ftruncate or truncate(path), shrinking or growing
//	fallocate  modes 0, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE (with and
//	           without KEEP_SIZE); a mode the filesystem refuses with
//	           EOPNOTSUPP is left out from then on and counted
//	copyrange  copy_file_range between two disjoint ranges of the file
//	mmapread   MAP_SHARED read mapping of a range; compared
//	mmapwrite  MAP_SHARED writable mapping, patterned store, msync(MS_SYNC)
//	fsync      fsync or fdatasync
//	reopen     close both descriptors and open again (on a union this moves
//	           a file from cached to passthrough io once nothing holds it)
//	stat       fstat of both descriptors and stat of the path; sizes compared
//	retire     finish a file (checked through a fresh open) and take the next
//	           one from the pool, so that many files are copied up per run
//
// Written bytes are a pattern of the operation number and the file offset,
// never zero, so stale data, lost writes and wrongly zeroed ranges all show
// as a difference, and the bytes found tell which operation wrote them.
//
// # Checks
//
// Reads and mmap reads are compared as they happen; sizes after every
// size-changing operation; every Config.CheckEvery operations, and when a
// file is retired and at the end, the whole of every active file is read
// through its old descriptor and through a fresh open and compared. A
// failure names the seed, the operation number and the last operations, so
// the run can be repeated exactly.
package fsx
