package mountinfo

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/unionmount/unionmount/internal/testenv"
)

// A mountinfo as containers-storage leaves it while it runs the mount
// program for `podman run --uidmap`: the storage directory is on the root
// filesystem (id 26) and idmapped at .../ID/mapped/0 (id 44).
const storage = `26 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
42 26 254:0 /var/lib/containers/storage/overlay /var/lib/containers/storage/overlay rw,relatime - ext4 /dev/vda rw
44 42 254:0 /var/lib/containers/storage/overlay /var/lib/containers/storage/overlay/ID/mapped/0 rw,relatime,idmapped - ext4 /dev/vda rw
50 26 0:40 / /mnt/with\040space rw,relatime - tmpfs tmpfs rw
51 26 0:41 / /mnt/with\040space rw shared:7 master:2 - fuse.unionmount unionmount rw,user_id=0,group_id=0
52 26 0:42 / /tmp/with\040space\134and\011tab rw - tmpfs my\040source rw`

func TestParse(t *testing.T) {
	mounts, err := Parse(strings.NewReader(storage))
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 6 {
		t.Fatalf("parsed %d mounts; want 6", len(mounts))
	}
	want := Mount{ID: 44, Parent: 42, Dev: "254:0", Root: "/var/lib/containers/storage/overlay",
		Mountpoint: "/var/lib/containers/storage/overlay/ID/mapped/0", Options: "rw,relatime,idmapped",
		FSType: "ext4", Source: "/dev/vda", SuperOptions: "rw"}
	if mounts[2] != want {
		t.Errorf("mount 44 parsed as\n%+v; want\n%+v", mounts[2], want)
	}
	if !mounts[2].HasOption("idmapped") || mounts[1].HasOption("idmapped") || mounts[2].HasOption("idmap") {
		t.Errorf("HasOption(idmapped) wrong on %+v or %+v", mounts[1], mounts[2])
	}
	// Optional fields before "-" are skipped; the last line has no newline.
	if m := mounts[4]; m.FSType != "fuse.unionmount" || m.Source != "unionmount" || m.SuperOptions != "rw,user_id=0,group_id=0" {
		t.Errorf("mount 51 parsed as %+v", m)
	}
	if m := mounts[5]; m.Mountpoint != "/tmp/with space\\and\ttab" || m.Source != "my source" {
		t.Errorf("mount 52 parsed as %+v", m)
	}
}

func TestOn(t *testing.T) {
	mounts, err := Parse(strings.NewReader(storage))
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string][]uint64{
		"/":                         {26},
		"/mnt/with space":           {50, 51}, // bottom first
		"/mnt":                      nil,
		`/mnt/with\040space`:        nil,
		"/tmp/with space\\and\ttab": {52},
	} {
		var got []uint64
		for _, m := range On(mounts, path) {
			got = append(got, m.ID)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("On(%q) = %v; want %v", path, got, want)
		}
	}
}

// TestParseSkipsMalformedLines: lines a kernel does not write are left
// out, not guessed at.
func TestParseSkipsMalformedLines(t *testing.T) {
	mounts, err := Parse(strings.NewReader("x y z\n\n1 2 0:1 / /a rw\nid 1 0:1 / /b rw - t s o\n3 4 0:2 / /c rw shared:1\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{
		{ID: 1, Parent: 2, Dev: "0:1", Root: "/", Mountpoint: "/a", Options: "rw"},
		{ID: 3, Parent: 4, Dev: "0:2", Root: "/", Mountpoint: "/c", Options: "rw"},
	}
	if !reflect.DeepEqual(mounts, want) {
		t.Errorf("got %+v; want %+v", mounts, want)
	}
}

// TestParseFormFeedInPath: the kernel escapes only space, tab, newline and
// backslash, so a mount point may hold a form feed or a carriage return
// as is; splitting the line on every kind of white space (as each copy of
// this parser did before) lost such a mount point.
func TestParseFormFeedInPath(t *testing.T) {
	mounts, err := Parse(strings.NewReader("7 1 0:9 / /mnt/a\fb\r rw - tmpfs tmpfs rw\n"))
	if err != nil || len(mounts) != 1 || mounts[0].Mountpoint != "/mnt/a\fb\r" {
		t.Errorf("got %+v, %v; want one mount on %q", mounts, err, "/mnt/a\fb\r")
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/plain`:             "/mnt/plain",
		`/mnt/a\040b`:            "/mnt/a b",
		`/mnt/tab\011x\134`:      "/mnt/tab\tx\\",
		`/mnt/nl\012`:            "/mnt/nl\n",
		`/tmp/a\040b\012c\134d\`: "/tmp/a b\nc\\d\\",
		`/x\04`:                  `/x\04`,  // a truncated escape stays
		`/x\04x`:                 `/x\04x`, // so does one with a non-octal digit
		`/x\400`:                 `/x\400`, // and one past a byte
		`/x\377`:                 "/x\xff",
		`\\040`:                  `\ `,
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestSelf(t *testing.T) {
	mounts, err := Self()
	if err != nil {
		testenv.Skipf(t, "no /proc/self/mountinfo: %v", err)
	}
	if len(On(mounts, "/")) == 0 {
		t.Errorf("no mount on / in %d mounts", len(mounts))
	}
	if ok, err := IsMountpoint("/"); err != nil || !ok {
		t.Errorf("IsMountpoint(/) = %v, %v", ok, err)
	}
	if ok, err := IsMountpoint(t.TempDir()); err != nil || ok {
		t.Errorf("IsMountpoint(a fresh temporary directory) = %v, %v", ok, err)
	}
}

// mangle escapes as the kernel's show_mountinfo does (mangle_path with
// " \t\n\\").
func mangle(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\n', '\\':
			fmt.Fprintf(&b, "\\%03o", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// FuzzParse: any text parses without a panic into at most one mount per
// line, and a mount point the kernel escaped comes back as it was.
func FuzzParse(f *testing.F) {
	f.Add(storage, "/mnt/a b")
	f.Add("1 0 0:1 / / rw - rootfs rootfs rw\n2 1 8:1 /a\\040b /m\\134x rw,idmapped - ext4 /dev/sda1 rw\n", `/x\040y`)
	f.Add("x y z\n\n7", "\\")
	f.Add("1 2 3 4 5 6 - \n", "\x00\n\t")
	f.Fuzz(func(t *testing.T, text, path string) {
		mounts, err := Parse(strings.NewReader(text))
		if err != nil {
			t.Fatal(err) // a strings.Reader does not fail
		}
		if lines := strings.Count(text, "\n") + 1; len(mounts) > lines {
			t.Fatalf("%d mounts from %d lines", len(mounts), lines)
		}
		if path == "" || strings.ContainsRune(path, 0) {
			return
		}
		line := "7 1 0:9 / " + mangle(path) + " rw shared:3 - tmpfs " + mangle(path) + " rw\n"
		mounts, err = Parse(strings.NewReader(line))
		if err != nil || len(mounts) != 1 || mounts[0].Mountpoint != path || mounts[0].Source != path || mounts[0].FSType != "tmpfs" {
			t.Fatalf("Parse(%q) = %+v, %v; want mount point and source %q", line, mounts, err, path)
		}
	})
}
