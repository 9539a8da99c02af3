// Package image is the vocabulary shared by unionctl's image and container
// tooling: the sentinel errors every layer of it returns (for errors.Is)
// and image references (NAME[:TAG] in the store, ParseRemote's
// [HOST[:PORT]/]NAME[:TAG][@DIGEST] for registries).
//
// The model is Docker's, on the union filesystem:
//
//	layer      a read-only directory holding one tar diff, unpacked in the
//	           on-disk format the union reads (char 0/0 whiteouts, opaque
//	           xattrs); stored once, shared by every image built on it
//	image      an ordered list of layers (bottom first) plus its OCI config
//	container  the image's layers plus one writable upper directory
//
// The work is split by concern:
//
//	image/layer    tar <-> directory: the hostile-input applier, the tar
//	               writer for commit and save, tar-split records (exact
//	               tar bytes back from a layer), diff of an upper
//	image/archive  docker-archive, oci-archive and OCI image layouts
//	image/store    the store directory: layers, images, containers, volumes
//	image/runner   running a container: namespaces, pivot_root, runc
//	image/registry pull, push, login, logout: the OCI distribution API
//	               (go-containerregistry), auth files, TLS, retries
//	image/imagetest  test kit: builds unionctl, busybox rootfs tarballs
//	image/registrytest  test kit: a real docker-registry, plain or TLS
//	               with htpasswd, seeded by skopeo
//
// Imports point one way: image <- layer <- archive <- store <- registry;
// runner stands alone (it knows a mounted root and a command, not the
// store), and cmd/unionctl wires them. docs/images.md describes the store layout and
// the verbs.
package image
