package image

import (
	"errors"
	"testing"
)

func TestParseReference(t *testing.T) {
	good := map[string]Reference{
		"busybox":                           {"busybox", "latest"},
		"busybox:1.36":                      {"busybox", "1.36"},
		"docker.io/library/busybox:latest":  {"docker.io/library/busybox", "latest"},
		"localhost:5000/tools/bb":           {"localhost:5000/tools/bb", "latest"},
		"localhost:5000/tools/bb:v1_2.3-rc": {"localhost:5000/tools/bb", "v1_2.3-rc"},
		"a__b/c-d.e":                        {"a__b/c-d.e", "latest"},
	}
	for s, want := range good {
		got, err := ParseReference(s)
		if err != nil || got != want {
			t.Errorf("ParseReference(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "Busybox", "bb:", "bb:-x", "bb@sha256:00", "/bb", "bb/", "a..b", "bb:t:t", "a b", "../x"} {
		if _, err := ParseReference(s); !errors.Is(err, ErrInvalidReference) {
			t.Errorf("ParseReference(%q) = %v, want ErrInvalidReference", s, err)
		}
	}
}

func TestFamiliar(t *testing.T) {
	for in, want := range map[string]string{
		"docker.io/library/busybox:latest": "busybox:latest",
		"docker.io/me/tool:1":              "me/tool:1",
		"localhost/x:y":                    "x:y",
		"quay.io/a/b:c":                    "quay.io/a/b:c",
	} {
		r, err := ParseReference(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Familiar().String(); got != want {
			t.Errorf("Familiar(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseRemote(t *testing.T) {
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	good := map[string]string{
		"busybox":                       "docker.io/library/busybox:latest",
		"busybox:1.36":                  "docker.io/library/busybox:1.36",
		"me/tool":                       "docker.io/me/tool:latest",
		"index.docker.io/busybox":       "docker.io/library/busybox:latest",
		"docker.io/library/busybox:1":   "docker.io/library/busybox:1",
		"localhost/x":                   "localhost/x:latest",
		"localhost:5000/a/b:c":          "localhost:5000/a/b:c",
		"127.0.0.1:5000/bb":             "127.0.0.1:5000/bb:latest",
		"quay.io/a/b":                   "quay.io/a/b:latest",
		"Host/x":                        "Host/x:latest",
		"busybox@" + d:                  "docker.io/library/busybox@" + d,
		"reg.example:443/a/b:t@" + d:    "reg.example:443/a/b:t@" + d,
		"127.0.0.1:5000/bb:latest@" + d: "127.0.0.1:5000/bb:latest@" + d,
	}
	for s, want := range good {
		got, err := ParseRemote(s)
		if err != nil || got.String() != want {
			t.Errorf("ParseRemote(%q) = %v, %v; want %s", s, got, err, want)
		}
	}
	r, _ := ParseRemote("busybox@" + d)
	if r.Local() != (Reference{}) || r.Tag != "" {
		t.Errorf("a digest-only reference names no local image: %+v", r)
	}
	for _, s := range []string{"", "Busybox", "bb:", "bb@sha256:00", "/bb", "bb/", "a..b", "a b", "../x",
		"host:5000/", "ho_st.io/x", "a/B", "bb@" + d + "x", "x:y:z", "[::1]:5000/x"} {
		if _, err := ParseRemote(s); !errors.Is(err, ErrInvalidReference) {
			t.Errorf("ParseRemote(%q) = %v, want ErrInvalidReference", s, err)
		}
	}
}
