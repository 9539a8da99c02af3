// Package build builds images from a Dockerfile, one step per
// instruction, as docker's classic builder does.
//
// The grammar is BuildKit's: the Dockerfile is parsed by
// github.com/moby/buildkit/frontend/dockerfile/parser into an AST,
// turned into typed instructions by .../instructions, and words are
// substituted (${VAR}, ${VAR:-x}, ${VAR:+x}) by the .../shell lexer.
//
// The model, in words used throughout:
//
//   - A stage starts at FROM and holds a current image (a stored image:
//     the base, or the image the previous step made) and the ARGs it
//     declared.
//   - A step is one instruction. Each step makes an image whose parent is
//     the current image (store.PutStep): a step that changes files (RUN,
//     COPY, ADD, WORKDIR of a missing directory) runs in a container on
//     the union, and the container's upper, written as commit writes it,
//     is the step's layer; a step that changes no file (ENV, CMD, ... or a
//     RUN that wrote nothing) adds a history entry with empty_layer.
//   - The cache: a step is reused when an image with the same parent and
//     the same cache key exists (store.CachedStep). The key is the
//     instruction after substitution, the ARG values a RUN sees, and for
//     COPY and ADD a checksum of every file they read (path, type, mode,
//     size, link target, content). A changed file changes its step's key,
//     hence that step's image, hence the parent of every later step.
//   - Steps' images are unnamed; the last one of the target stage gets the
//     tags. rmi of it removes the unnamed chain below it (the cache).
//
// Files are written into a container's union from the host side, through
// a descriptor of its merged root and openat2(RESOLVE_IN_ROOT): a symlink
// in the image resolves inside it, never outside.
package build
