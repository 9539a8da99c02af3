// Package lazy reads the files of an eStargz layer that is not in the
// store yet: names and attributes come from its TOC, file bytes from the
// blob's chunks, fetched from the registry with one Range request per
// chunk the first time they are read.
//
// The rules a reader can rely on:
//
//   - A byte is served only from a chunk whose digest (the TOC's
//     chunkDigest, the TOC itself verified against the manifest's
//     annotation) matched. A chunk that does not match is an error
//     (ErrTampered), never other bytes; it is not cached.
//   - A fetch that does not complete within Options.Deadline fails with
//     ErrUnavailable; chunks already cached are served regardless, and the
//     next read tries the registry again (no state is kept about a
//     failure, so reads recover as soon as the registry answers).
//   - Verified chunks are kept in a Cache directory named by chunk digest
//     (content addressed: files shared by layers are kept once), bounded
//     in bytes, least recently used first out. A cached chunk is checked
//     again when read from disk. A new Cache over the same directory (a
//     restart) finds what was cached.
//
// At the FUSE boundary every error of this package is EIO.
package lazy
