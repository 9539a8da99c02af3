package image

import (
	"errors"
	"testing"
)

// FuzzParseReference: any string parses or fails with ErrInvalidReference;
// what parses has a name and a tag, prints back to a string that parses
// to the same reference, and has a familiar form that parses too.
func FuzzParseReference(f *testing.F) {
	for _, s := range []string{"", "busybox", "busybox:1.36", "docker.io/library/busybox:latest",
		"localhost:5000/a/b:c", "a@sha256:00", "A", "a:", ":a", "a//b", "a/b/", "a:b:c", "x.y-z__w/q:t.1-2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseReference(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidReference) {
				t.Fatalf("ParseReference(%q): error %v is not ErrInvalidReference", s, err)
			}
			return
		}
		if r.Name == "" || r.Tag == "" {
			t.Fatalf("ParseReference(%q) = %+v: empty name or tag", s, r)
		}
		r2, err := ParseReference(r.String())
		if err != nil || r2 != r {
			t.Fatalf("ParseReference(%q) = %+v, but its String %q parses to %+v, %v", s, r, r.String(), r2, err)
		}
		if fr := r.Familiar(); fr.Name != "" {
			if _, err := ParseReference(fr.String()); err != nil {
				t.Fatalf("familiar form %q of %q does not parse: %v", fr.String(), s, err)
			}
		}
	})
}

// FuzzParseRemote: any string parses or fails with ErrInvalidReference;
// what parses is fully qualified (a registry, a path, a tag or a digest),
// prints back to a string that parses to the same reference, and its
// local name (if any) is a valid stored-image name.
func FuzzParseRemote(f *testing.F) {
	for _, s := range []string{"", "busybox", "busybox:1.36", "me/tool", "localhost:5000/a/b:c", "[::1]:5000/x",
		"a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "Host/x", "a:b:c", "index.docker.io/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRemote(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidReference) {
				t.Fatalf("ParseRemote(%q): error %v is not ErrInvalidReference", s, err)
			}
			return
		}
		if r.Registry == "" || r.Repository == "" || (r.Tag == "" && r.Digest == "") {
			t.Fatalf("ParseRemote(%q) = %+v: not fully qualified", s, r)
		}
		r2, err := ParseRemote(r.String())
		if err != nil || r2 != r {
			t.Fatalf("ParseRemote(%q) = %+v, but its String %q parses to %+v, %v", s, r, r.String(), r2, err)
		}
		if l := r.Local(); l.Name != "" {
			if _, err := ParseReference(l.String()); err != nil {
				t.Fatalf("local name %q of %q does not parse: %v", l.String(), s, err)
			}
		}
	})
}
