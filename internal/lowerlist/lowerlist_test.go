package lowerlist

import (
	"reflect"
	"strings"
	"testing"
)

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"/plain":      "/plain",
		`/a:b,c\d"e`:  `/a\:b\,c\\d\"e`,
		`\\`:          `\\\\`,
		"/with space": "/with space",
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{in: "a", want: []string{"a"}},
		{in: "/l1:/l2", want: []string{"/l1", "/l2"}},
		{in: `a\:b:c\\:d\,e`, want: []string{"a:b", `c\`, "d,e"}},
		{in: "a::b", err: "empty path"},
		{in: ":a", err: "empty path"},
		{in: "a:", err: "empty path"},
		{in: "", err: "empty path"},
		{in: `a\`, err: "lone backslash"},
	} {
		got, err := Split(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Split(%q) = %q, %v; want an error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Split(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

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

// FuzzSplit: any list splits or fails without a panic; a list it accepts
// has no empty path and survives Join; any paths survive Join and Split.
func FuzzSplit(f *testing.F) {
	for _, s := range []string{
		"", "a", "a:b", `a\:b`, `a\\:b`, `a\`, "a::b", ":", `\:`, `\\\:`, "/var/lib/containers/storage/overlay/l/ABC",
		"x|y:z", `c:\dir|d`, `a,b|"q"`, "\x00|\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, err := Split(s); err == nil {
			for _, p := range got {
				if p == "" {
					t.Fatalf("Split(%q) = %q: an empty path", s, got)
				}
			}
			again, err := Split(Join(got))
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("Split(%q) = %q, but its joined form gives %q, %v", s, got, again, err)
			}
		}
		if ps := pathsOf(s); len(ps) > 0 {
			got, err := Split(Join(ps))
			if err != nil || !reflect.DeepEqual(got, ps) {
				t.Fatalf("Split(%q) = %q, %v; want %q", Join(ps), got, err, ps)
			}
			for _, p := range ps {
				if e := Escape(p); strings.ContainsAny(strings.NewReplacer(`\\`, "", `\:`, "", `\,`, "", `\"`, "").Replace(e), `\:,"`) {
					t.Fatalf("Escape(%q) = %q leaves a separator or quote bare", p, e)
				}
			}
		}
	})
}
