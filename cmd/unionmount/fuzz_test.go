package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/unionmount/unionmount/internal/lowerlist"
)

// pathsOf cuts fuzz input into non-empty paths at '|'.
func pathsOf(s string) []string {
	var ps []string
	for _, p := range strings.Split(s, "|") {
		if p != "" {
			ps = append(ps, p)
		}
	}
	return ps
}

var lowerSeeds = []string{
	"", "a", "a:b", `a\:b`, `a\\:b`, `a\`, "a::b", ":", `\:`, `\\\:`, "/var/lib/containers/storage/overlay/l/ABC",
	"x|y:z", `c:\dir|d`, `a,b|"q"`, "\x00|\xff",
}

func FuzzParseMountOptions(f *testing.F) {
	for _, s := range lowerSeeds {
		f.Add(s)
	}
	for _, s := range []string{
		"lowerdir=/a:/b,upperdir=/u,workdir=/w",
		",,lowerdir=/a,,",
		`lowerdir=/a,context="system_u:object_r:x:s0:c1,c2",xattr_permissions=2`,
		"uidmapping=:0:100000:65536,gidmapping=0:100000:65536",
		"squash_to_uid=1,squash_to_gid=2,squash_to_root,ro,volatile,fsync=0,timeout=1.5",
		`lowerdir="/a,b",upperdir=\"`,
		`x="`, `\`, `"\"`, "uidmapping=::::", "timeout=1e400",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// Any input: no panic, in the parser or through parseArgs.
		_ = newMountOpts().parse(s)
		_, _ = parseArgs([]string{"-o", s, "/mnt"})

		// Escaped paths round-trip through lowerdir= and upperdir=,
		// between empty elements and a quoted value with commas.
		ps := pathsOf(s)
		if len(ps) == 0 {
			return
		}
		opt := ",,upperdir=" + lowerlist.Escape(ps[0]) + ",lowerdir=" + lowerlist.Join(ps) + `,,context="a:b,c",`
		m := newMountOpts()
		if err := m.parse(opt); err != nil {
			t.Fatalf("parse(%q): %v", opt, err)
		}
		if !reflect.DeepEqual(m.lowers, ps) || m.upper == nil || *m.upper != ps[0] {
			t.Fatalf("parse(%q): lowers %q upper %v; want %q and %q", opt, m.lowers, m.upper, ps, ps[0])
		}
		if want := []string{`context="a:b,c"`}; !reflect.DeepEqual(m.ignored, want) {
			t.Fatalf("parse(%q): ignored %q; want %q", opt, m.ignored, want)
		}
	})
}

// FuzzParseIDMapping: any uidmapping=/gidmapping= value parses or fails;
// every range that parses is non-empty and fits in 32-bit ids on both
// sides, and there is one range per LAYER:MOUNT:COUNT triple.
func FuzzParseIDMapping(f *testing.F) {
	for _, s := range []string{"", ":", ":0:100000:65536", "0:1:1:5:6:7", "0:0:4294967296", "4294967295:0:1",
		"1:2", "a:b:c", "::::", ":0:0:0", "-1:0:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		maps, err := parseIDMapping(s)
		if err != nil {
			return
		}
		if want := len(strings.Split(strings.TrimPrefix(s, ":"), ":")) / 3; len(maps) != want {
			t.Fatalf("parseIDMapping(%q): %d ranges, want %d", s, len(maps), want)
		}
		for _, m := range maps {
			if m.Size == 0 || uint64(m.Host)+uint64(m.Size) > 1<<32 || uint64(m.Container)+uint64(m.Size) > 1<<32 {
				t.Fatalf("parseIDMapping(%q): bad range %+v", s, m)
			}
		}
	})
}
