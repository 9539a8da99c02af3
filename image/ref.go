package image

import (
	"fmt"
	"regexp"
	"strings"
)

// DefaultTag is the tag of a reference that names none.
const DefaultTag = "latest"

// Reference is an image name with its tag: "busybox:latest",
// "localhost:5000/tools/busybox:1.36".
type Reference struct {
	Name string // repository, with any registry host: "docker.io/library/busybox"
	Tag  string
}

// String returns NAME:TAG.
func (r Reference) String() string { return r.Name + ":" + r.Tag }

var (
	// The Docker reference grammar, without digests: path components of
	// lowercase letters and digits joined by '.', '_', '__' or dashes; an
	// optional host[:port] first.
	component = `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
	host      = `(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)?`
	nameRE    = regexp.MustCompile(`^` + host + component + `(?:/` + component + `)*$`)
	tagRE     = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
)

// ParseReference parses NAME[:TAG]; a missing tag is DefaultTag. Digests
// (NAME@sha256:...) are not image names here.
func ParseReference(s string) (Reference, error) {
	if strings.Contains(s, "@") {
		return Reference{}, fmt.Errorf("%w %q: digests cannot name a stored image; use NAME[:TAG]", ErrInvalidReference, s)
	}
	name, tag := s, DefaultTag
	if i := strings.LastIndexByte(s, ':'); i > strings.LastIndexByte(s, '/') {
		name, tag = s[:i], s[i+1:]
	}
	if len(name) > 255 || !nameRE.MatchString(name) {
		return Reference{}, fmt.Errorf("%w %q: use NAME[:TAG] with a lowercase name (letters, digits, '.', '_', '-', '/')", ErrInvalidReference, s)
	}
	if !tagRE.MatchString(tag) {
		return Reference{}, fmt.Errorf("%w %q: a tag is up to 128 letters, digits, '_', '.' or '-'", ErrInvalidReference, s)
	}
	return Reference{Name: name, Tag: tag}, nil
}

// Familiar returns the short form Docker shows: "docker.io/library/x" and
// "localhost/x" (podman's local prefix) become "x".
func (r Reference) Familiar() Reference {
	n := r.Name
	for _, p := range []string{"docker.io/library/", "index.docker.io/library/", "docker.io/", "localhost/"} {
		if strings.HasPrefix(n, p) {
			n = n[len(p):]
			break
		}
	}
	return Reference{Name: n, Tag: r.Tag}
}
