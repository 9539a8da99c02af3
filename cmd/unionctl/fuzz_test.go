package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseVolume: any -v argument parses or fails with a message naming
// it; what parses is a bind mount of an absolute host path or a named
// volume, onto an absolute container path.
func FuzzParseVolume(f *testing.F) {
	for _, s := range []string{"", ":", "/a:/b", "./a:/b:ro", "v:/data", "v:/data:rw", "v:data", "/a:/b:x",
		"a:b:c:d", "/:/", ".:/x", "..:/y:ro", "v::/z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseVolume(s)
		if err != nil {
			if !strings.Contains(err.Error(), "-v") && !strings.Contains(err.Error(), s) {
				t.Fatalf("parseVolume(%q): error %q names neither the flag nor the argument", s, err)
			}
			return
		}
		if !strings.HasPrefix(m.Destination, "/") {
			t.Fatalf("parseVolume(%q) = %+v: container path not absolute", s, m)
		}
		switch m.Type {
		case "bind":
			if !filepath.IsAbs(m.Source) {
				t.Fatalf("parseVolume(%q) = %+v: bind source not absolute", s, m)
			}
		case "volume":
			if m.Source == "" || strings.HasPrefix(m.Source, "/") || strings.HasPrefix(m.Source, ".") {
				t.Fatalf("parseVolume(%q) = %+v: bad volume name", s, m)
			}
		default:
			t.Fatalf("parseVolume(%q) = %+v: type %q", s, m, m.Type)
		}
	})
}
