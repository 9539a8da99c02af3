package runner

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestResolveUser(t *testing.T) {
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	group := filepath.Join(dir, "group")
	os.WriteFile(passwd, []byte("root:x:0:0:root:/root:/bin/sh\n# comment\nweb:x:33:44:www:/var/www:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n"), 0o644)
	os.WriteFile(group, []byte("root:x:0:\nwebgrp:x:44:\nextra:x:50:web,other\nlog:x:51:web\n"), 0o644)
	cases := []struct {
		spec          string
		uid, gid      int
		groups        []int
		home          string
		passwd, group string
		wantErr       bool
	}{
		{spec: "", uid: 0, gid: 0, groups: []int{}, home: "/root"},
		{spec: "web", uid: 33, gid: 44, groups: []int{50, 51}, home: "/var/www"},
		{spec: "33", uid: 33, gid: 44, groups: []int{50, 51}, home: "/var/www"},
		{spec: "web:extra", uid: 33, gid: 50, groups: []int{51}, home: "/var/www"},
		{spec: "1234:99", uid: 1234, gid: 99, groups: []int{}, home: "/"},
		{spec: "1234", uid: 1234, gid: 0, groups: []int{}, home: "/"},
		{spec: "ghost", wantErr: true},
		{spec: "web:ghosts", wantErr: true},
	}
	for _, c := range cases {
		uid, gid, groups, home, err := ResolveUser(c.spec, passwd, group)
		if c.wantErr {
			if err == nil {
				t.Errorf("%q: no error", c.spec)
			}
			continue
		}
		if err != nil || uid != c.uid || gid != c.gid || !slices.Equal(groups, c.groups) || home != c.home {
			t.Errorf("%q: %d %d %v %q %v; want %d %d %v %q", c.spec, uid, gid, groups, home, err, c.uid, c.gid, c.groups, c.home)
		}
	}
	// Without the files, numeric ids still work.
	if uid, gid, _, _, err := ResolveUser("7:8", "", ""); err != nil || uid != 7 || gid != 8 {
		t.Errorf("7:8 without files: %d %d %v", uid, gid, err)
	}
}

func TestSubIDs(t *testing.T) {
	p := filepath.Join(t.TempDir(), "subuid")
	os.WriteFile(p, []byte("alice:100000:65536\n1001:300000:1000\nbad line\nbob:x:1\n"), 0o644)
	if r, ok := SubIDs(p, "alice", 1000); !ok || r != (IDRange{100000, 65536}) {
		t.Errorf("alice: %v %v", r, ok)
	}
	if r, ok := SubIDs(p, "carol", 1001); !ok || r != (IDRange{300000, 1000}) {
		t.Errorf("by uid: %v %v", r, ok)
	}
	if _, ok := SubIDs(p, "bob", 1002); ok {
		t.Error("bob's malformed line accepted")
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "tool"), []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "data"), []byte("x"), 0o644)
	env := []string{"A=1", "PATH=/nonexistent:" + dir}
	if p, err := lookPath("tool", env); err != nil || p != dir+"/tool" {
		t.Errorf("tool: %q %v", p, err)
	}
	if _, err := lookPath("data", env); err == nil {
		t.Error("a file without x bits was found")
	}
	if p, err := lookPath("/abs/cmd", env); err != nil || p != "/abs/cmd" {
		t.Errorf("absolute: %q %v", p, err)
	}
}
