// Package archive reads and writes the ways images travel: docker save
// archives (the layout docker wrote before version 25, with
// "<id>/layer.tar" members, and the OCI-layout one of docker 25+, whose
// manifest.json points into blobs/), oci-archive files (a tar of an OCI
// image layout) and OCI image layout directories.
//
// Reading never trusts names: every blob is checked against the size and
// digest its descriptor gives when its end is read (Blob.Open), configs
// against their digests; image indexes are followed down to the manifest
// for this machine's platform. Archives are read in place: one pass
// indexes the members, then blobs are read with ReadAt; a wholly
// compressed archive (docker save | gzip) is decompressed to a temporary
// file first. Layer blobs may be uncompressed, gzip or zstd.
//
// Writing takes layers already in files (SaveLayer) and lays them out; the
// store produces them (image/store.Save).
package archive
