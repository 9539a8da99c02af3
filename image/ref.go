package image

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
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

// DefaultRegistry is the registry of a remote reference that names none,
// as Docker and podman (with its short-name default) read it.
const DefaultRegistry = "docker.io"

// Remote is a reference to an image in a registry, fully qualified:
// "busybox" is docker.io/library/busybox:latest.
type Remote struct {
	Registry   string        // host[:port]: "docker.io", "127.0.0.1:5000"
	Repository string        // path in the registry: "library/busybox"
	Tag        string        // "" when only a digest names the image
	Digest     digest.Digest // "" when none was given
}

// Name is REGISTRY/REPOSITORY.
func (r Remote) Name() string { return r.Registry + "/" + r.Repository }

// String is NAME[:TAG][@DIGEST].
func (r Remote) String() string {
	s := r.Name()
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest.String()
	}
	return s
}

// Local is the name a pulled image gets in the store: NAME:TAG, or a zero
// Reference (no name) when the reference gave only a digest.
func (r Remote) Local() Reference {
	if r.Tag == "" {
		return Reference{}
	}
	return Reference{Name: r.Name(), Tag: r.Tag}
}

var (
	registryRE = regexp.MustCompile(`^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*)(?::[0-9]+)?$`)
	pathRE     = regexp.MustCompile(`^` + component + `(?:/` + component + `)*$`)
)

// ParseRemote reads a reference as Docker and podman do: [HOST[:PORT]/]
// PATH[:TAG][@DIGEST]. The first component is a registry when it holds a
// '.' or a ':', or is "localhost", or has uppercase letters; otherwise
// the registry is docker.io, where a one-component path is in "library/".
// No tag and no digest means DefaultTag.
func ParseRemote(s string) (Remote, error) {
	bad := func(why string) (Remote, error) {
		return Remote{}, fmt.Errorf("%w %q: %s", ErrInvalidReference, s, why)
	}
	if len(s) > 4096 {
		return bad("too long")
	}
	rest := s
	var r Remote
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		d, err := digest.Parse(rest[i+1:])
		if err != nil {
			return bad("the part after '@' is not a digest like sha256:<64 hex digits>")
		}
		r.Digest = d
		rest = rest[:i]
	}
	if i := strings.LastIndexByte(rest, ':'); i > strings.LastIndexByte(rest, '/') {
		r.Tag = rest[i+1:]
		rest = rest[:i]
		if !tagRE.MatchString(r.Tag) {
			return bad("a tag is up to 128 letters, digits, '_', '.' or '-'")
		}
	}
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		first := rest[:i]
		if strings.ContainsAny(first, ".:") || first == "localhost" || strings.ToLower(first) != first {
			r.Registry, rest = first, rest[i+1:]
			if !registryRE.MatchString(r.Registry) {
				return bad("the registry is not HOST[:PORT]")
			}
		}
	}
	if r.Registry == "" || r.Registry == "index.docker.io" {
		r.Registry = DefaultRegistry
	}
	if r.Registry == DefaultRegistry && !strings.Contains(rest, "/") {
		rest = "library/" + rest
	}
	if !pathRE.MatchString(rest) || len(r.Registry)+1+len(rest) > 255 {
		return bad("use [HOST[:PORT]/]NAME[:TAG][@DIGEST] with a lowercase name (letters, digits, '.', '_', '-', '/')")
	}
	r.Repository = rest
	if r.Tag == "" && r.Digest == "" {
		r.Tag = DefaultTag
	}
	return r, nil
}
