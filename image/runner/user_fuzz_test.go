package runner

import (
	"os"
	"strings"
	"testing"
)

// FuzzResolveUser feeds arbitrary /etc/passwd and /etc/group files (an
// image's, so untrusted) and user specs (an image config's User, also
// untrusted) to ResolveUser: it must not panic, and what it returns must
// be usable as ids: 0 to 4294967294 (uid_t; -1 means "unchanged" to the
// kernel), the supplementary groups too, and an error of one line.
func FuzzResolveUser(f *testing.F) {
	passwd := "root:x:0:0:root:/root:/bin/sh\n# comment\nweb:x:33:44:www:/var/www:/bin/sh\n"
	group := "root:x:0:\nwebgrp:x:44:\nextra:x:50:web,other\n"
	for _, spec := range []string{"", "web", "33", "web:extra", "1234:99", "ghost", "web:ghosts", "0:0"} {
		f.Add(spec, passwd, group)
	}
	f.Add("evil", "evil:x:-1:-1::/:/bin/sh\n", "")
	f.Add("big", "big:x:99999999999:4294967295::/:/bin/sh\n", "g:x:-3:big\n")
	f.Add("4294967296:-1", "", "")
	f.Add("a", strings.Repeat("x", 70000)+"\na:x:1:1::/:/bin/sh\n", "")
	dir := f.TempDir()
	write := func(t *testing.T, name, content string) string {
		fl, err := os.CreateTemp(dir, name)
		if err != nil {
			t.Fatal(err)
		}
		defer fl.Close()
		t.Cleanup(func() { os.Remove(fl.Name()) })
		if _, err := fl.WriteString(content); err != nil {
			t.Fatal(err)
		}
		return fl.Name()
	}
	f.Fuzz(func(t *testing.T, spec, passwd, group string) {
		pp, gp := write(t, "passwd", passwd), write(t, "group", group)
		uid, gid, groups, _, err := ResolveUser(spec, pp, gp)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error of more than one line: %q", err)
			}
			return
		}
		valid := func(id int) bool { return id >= 0 && id <= maxID }
		if !valid(uid) || !valid(gid) {
			t.Fatalf("ResolveUser(%q) = uid %d, gid %d: not ids", spec, uid, gid)
		}
		for _, g := range groups {
			if !valid(g) {
				t.Fatalf("ResolveUser(%q): supplementary group %d is not an id", spec, g)
			}
		}
	})
}
