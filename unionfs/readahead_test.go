package unionfs

import "testing"

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/plain`:        "/mnt/plain",
		`/mnt/a\040b`:       "/mnt/a b",
		`/mnt/tab\011x\134`: "/mnt/tab\tx\\",
		`/mnt/nl\012`:       "/mnt/nl\n",
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
