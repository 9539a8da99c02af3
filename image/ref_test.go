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
