package main

import (
	"archive/tar"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/unionmount/unionmount/image/imagetest"
	"github.com/unionmount/unionmount/internal/fstest"
	"github.com/unionmount/unionmount/internal/testenv"
)

// session is a store with the busybox image imported as "busybox:base".
func session(t testing.TB) *imagetest.Session {
	t.Helper()
	fstest.RequireFUSE(t)
	imagetest.RequireBusybox(t)
	s := imagetest.NewSession(t)
	tarball := imagetest.WriteFile(t, t.TempDir(), "rootfs.tar", imagetest.BusyboxTar(t,
		imagetest.Entry{Name: "etc/motd", Body: []byte("welcome\n")},
		imagetest.Entry{Name: "srv/", Type: tar.TypeDir},
		imagetest.Entry{Name: "srv/old/", Type: tar.TypeDir},
		imagetest.Entry{Name: "srv/old/a", Body: []byte("a\n")},
		imagetest.Entry{Name: "srv/old/b", Body: []byte("b\n")},
	))
	s.Must(nil, "import", tarball, "busybox:base")
	return s
}

// TestThreeLayerSession: the verbs on a three-layer image made by two
// commits: history, diff, images, inspect, ps -s, save, rmi, load.
func TestThreeLayerSession(t *testing.T) {
	s := session(t)
	s.Must(nil, "run", "--name", "step1", "busybox:base", "sh", "-c",
		"mkdir /app && echo v1 > /app/version && rm /etc/motd")
	if got := imagetest.Lines(s.Must(nil, "diff", "step1").Stdout); !slices.Equal(got,
		[]string{"A /app", "A /app/version", "C /etc", "D /etc/motd"}) {
		t.Errorf("diff step1: %q", got)
	}
	s.Must(nil, "commit", "-m", "add app", "step1", "app:1")
	s.Must(nil, "run", "--name", "step2", "app:1", "sh", "-c",
		"rm -r /srv/old && mkdir /srv/old && echo new > /srv/old/c && echo v2 > /app/version")
	if got := imagetest.Lines(s.Must(nil, "diff", "step2").Stdout); !slices.Equal(got,
		[]string{"C /app", "C /app/version", "C /srv", "C /srv/old", "D /srv/old/a", "D /srv/old/b", "A /srv/old/c"}) {
		t.Errorf("diff step2: %q", got)
	}
	id := strings.TrimSpace(s.Must(nil, "commit", "-m", "replace /srv/old", "step2", "app:2").Stdout)
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(id) {
		t.Fatalf("commit printed %q", id)
	}

	// history: docker's columns, but the first is LAYER (a layer's chain
	// ID: there are no intermediate images to name, docs/images.md).
	hist := parseTable(t, s.Must(nil, "history", "app:2").Stdout,
		"LAYER", "CREATED", "CREATED BY", "SIZE", "COMMENT")
	if len(hist) != 3 || hist[0]["COMMENT"] != "replace /srv/old" || hist[1]["COMMENT"] != "add app" ||
		hist[0]["SIZE"] != "7B" || hist[1]["SIZE"] != "3B" ||
		hist[0]["CREATED BY"] != "sh -c rm -r /srv/old && mkdir /srv/old && ec…" ||
		!strings.HasPrefix(hist[2]["CREATED BY"], "unionctl import ") || hist[2]["COMMENT"] != "" {
		t.Errorf("history rows: %q", hist)
	}
	var hj []historyJSON
	for _, l := range imagetest.Lines(s.Must(nil, "history", "--format", "json", "app:2").Stdout) {
		var h historyJSON
		if err := json.Unmarshal([]byte(l), &h); err != nil {
			t.Fatal(err)
		}
		hj = append(hj, h)
	}
	if len(hj) != 3 || hj[0].Size != int64(len("new\nv2\n")) || hj[1].Size != int64(len("v1\n")) {
		t.Errorf("history sizes: %+v", hj)
	}

	images := parseTable(t, s.Must(nil, "images").Stdout, "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")
	var names []string
	for _, r := range images {
		names = append(names, r["REPOSITORY"]+":"+r["TAG"])
		if !regexp.MustCompile(`^[0-9a-f]{12}$`).MatchString(r["IMAGE ID"]) || !strings.HasSuffix(r["CREATED"], " ago") {
			t.Errorf("images row %q", r)
		}
	}
	if !slices.Equal(names, []string{"app:2", "app:1", "busybox:base"}) {
		t.Errorf("images lists %q, want newest first app:2 app:1 busybox:base", names)
	}
	if images[0]["IMAGE ID"] != strings.TrimPrefix(id, "sha256:")[:12] {
		t.Errorf("images: app:2 has ID %s, commit printed %s", images[0]["IMAGE ID"], id)
	}
	imageSize := map[string]int64{} // NAME:TAG -> VirtualSize
	for _, l := range imagetest.Lines(s.Must(nil, "images", "--format", "json").Stdout) {
		var j imageJSON
		if err := json.Unmarshal([]byte(l), &j); err != nil {
			t.Fatal(err)
		}
		imageSize[j.Repository+":"+j.Tag] = j.VirtualSize
	}
	// An image's size is the sum of its layers' (history's SIZE).
	var sum int64
	for _, h := range hj {
		sum += h.Size
	}
	if imageSize["app:2"] != sum {
		t.Errorf("images says app:2 is %d bytes, its history's layers add up to %d", imageSize["app:2"], sum)
	}
	var insp []imageInspect
	if err := json.Unmarshal([]byte(s.Must(nil, "inspect", "app:2").Stdout), &insp); err != nil {
		t.Fatal(err)
	}
	if len(insp) != 1 || insp[0].ID != id || len(insp[0].Layers) != 3 || insp[0].Layers[0].DiffID == "" {
		t.Errorf("inspect: %+v", insp)
	}

	// ps -s: the writable layer is what du says of the upper; the
	// virtual size is the image's size plus that, as docker's SizeRootFs.
	psRows := parseTable(t, s.Must(nil, "ps", "-a", "-s").Stdout,
		"CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES", "SIZE")
	if len(psRows) != 2 || psRows[0]["NAMES"] != "step2" || psRows[0]["IMAGE"] != "app:1" ||
		psRows[0]["COMMAND"] != `"sh -c rm -r /srv/ol…"` || !strings.HasPrefix(psRows[0]["STATUS"], "Exited (0) ") {
		t.Errorf("ps -a -s rows: %q", psRows)
	}
	var ps []psJSON
	for _, l := range imagetest.Lines(s.Must(nil, "ps", "-a", "-s", "--format", "json", "--no-trunc").Stdout) {
		var p psJSON
		json.Unmarshal([]byte(l), &p)
		ps = append(ps, p)
	}
	if len(ps) != 2 {
		t.Fatalf("ps -a: %+v", ps)
	}
	for _, p := range ps {
		if p.State != "exited" || !strings.HasPrefix(p.Status, "Exited (0)") {
			t.Errorf("%s: state %s %q", p.Names, p.State, p.Status)
		}
		out, err := exec.Command("du", "-s", "-B1", filepath.Join(s.Root, "containers", p.ID, "upper")).Output()
		if err != nil {
			t.Fatal(err)
		}
		if du := strings.Fields(string(out))[0]; strconv.FormatInt(p.SizeRw, 10) != du {
			t.Errorf("%s: size rw %d, du says %s", p.Names, p.SizeRw, du)
		}
		if img, ok := imageSize[p.Image]; !ok || p.SizeRootFs != img+p.SizeRw {
			t.Errorf("%s: virtual size %d, want the size of %s (%d) plus the writable layer's (%d)", p.Names, p.SizeRootFs, p.Image, img, p.SizeRw)
		}
		for _, r := range psRows {
			if r["NAMES"] == p.Names && r["SIZE"] != humanSize(p.SizeRw)+" (virtual "+humanSize(p.SizeRootFs)+")" {
				t.Errorf("%s: ps -s SIZE %q, want %s (virtual %s)", p.Names, r["SIZE"], humanSize(p.SizeRw), humanSize(p.SizeRootFs))
			}
		}
	}

	// The committed image shows the changes of both layers.
	out := s.Must(nil, "run", "--rm", "app:2", "sh", "-c",
		"cat /app/version; ls /srv/old; test -e /etc/motd && echo motd still there; true").Stdout
	if out != "v2\nc\n" {
		t.Errorf("app:2 view: %q", out)
	}

	// save, rmi everything, load: same IDs, same view.
	archivePath := filepath.Join(t.TempDir(), "app.tar")
	s.Must(nil, "save", "-o", archivePath, "app:2", "app:1")
	s.Must(nil, "rm", "step1", "step2")
	rmi := s.Must(nil, "rmi", "app:2", "app:1", "busybox:base").Stdout
	if n := strings.Count(rmi, "Deleted: "); n != 6 {
		t.Errorf("rmi deleted %d objects, want 3 images and 3 layers:\n%s", n, rmi)
	}
	if files := imagetest.StoreFiles(t, s.Root); len(files) > 6 {
		t.Errorf("store not empty after rmi: %q", files)
	}
	loaded := s.Must(nil, "load", "-i", archivePath).Stdout
	if loaded != "Loaded image: app:2\nLoaded image: app:1\n" {
		t.Errorf("load printed %q", loaded)
	}
	if got := strings.TrimSpace(s.Must(nil, "images", "-q", "--no-trunc").Stdout); !strings.Contains(got, id) {
		t.Errorf("images after load: %q, want %s", got, id)
	}
	if out := s.Must(nil, "run", "--rm", "app:2", "cat", "/srv/old/c").Stdout; out != "new\n" {
		t.Errorf("after load: %q", out)
	}
}

// TestRunExitCodes: the container's status comes back; 125, 126, 127 as
// docker; --rm leaves nothing.
func TestRunExitCodes(t *testing.T) {
	s := session(t)
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"busybox:base", "sh", "-c", "exit 42"}, 42, ""},
		{[]string{"busybox:base", "true"}, 0, ""},
		// (The command is PID 1 of its namespace, which ignores signals
		// from inside it: a child kills itself.)
		{[]string{"busybox:base", "sh", "-c", "sh -c 'kill -9 $$'; exit $?"}, 137, ""},
		{[]string{"busybox:base", "no-such-command"}, 127, "executable file not found"},
		{[]string{"busybox:base", "/etc/motd"}, 126, "permission denied"},
		{[]string{"-w", "/etc/motd", "busybox:base", "true"}, 125, "working directory"},
		{[]string{"--user", "ghost", "busybox:base", "true"}, 125, "no such user"},
		{[]string{"no-such-image", "true"}, 125, "no image"},
	}
	for _, c := range cases {
		r := s.Run(nil, append([]string{"run", "--rm"}, c.args...)...)
		if r.Code != c.code || !strings.Contains(r.Stderr, c.msg) {
			t.Errorf("run %q: %v\nwant exit %d and %q", c.args, r, c.code, c.msg)
		}
	}
	if ps := s.Must(nil, "ps", "-a", "-q").Stdout; ps != "" {
		t.Errorf("--rm left containers: %q", ps)
	}
	// start -a of an exited container runs it again, with its upper.
	s.Must(nil, "create", "--name", "again", "busybox:base", "sh", "-c", "echo x >> /count; wc -l < /count; exit 3")
	for i := 1; i <= 2; i++ {
		r := s.Run(nil, "start", "-a", "again")
		if r.Code != 3 || strings.TrimSpace(r.Stdout) != strconv.Itoa(i) {
			t.Errorf("start -a #%d: %v", i, r)
		}
	}
}

// TestRunEnvironment: user, working directory, environment, hostname and
// the namespaces the command sees.
func TestRunEnvironment(t *testing.T) {
	s := session(t)
	checkEnvironment(t, s)
	// stdin reaches the command.
	if out := s.Must([]byte("from stdin\n"), "run", "--rm", "busybox:base", "cat").Stdout; out != "from stdin\n" {
		t.Errorf("stdin: %q", out)
	}
}

// envScript prints what a container sees: its user, working directory,
// environment and hostname; its PID and the processes its /proc shows;
// its /dev, whose devices work; the inodes of its PID, UTS, IPC and mount
// namespaces.
const envScript = `id -u; id -g; pwd; echo $GREETING $HOME; hostname; cat /etc/hostname
echo $$; echo /proc/[0-9]*; cat /proc/1/comm
ls /dev; head -c 3 /dev/zero | wc -c; echo x > /dev/null && echo null
for ns in pid uts ipc mnt; do stat -L -c "$ns %i" /proc/self/ns/$ns; done`

// envWant is envScript's output for the run in checkEnvironment, less the
// namespace lines.
const envWant = "65534\n65534\n/made/here\nhi /nonexistent\nbox\nbox\n" +
	"1\n/proc/1\nsh\n" +
	"core\nfd\nfull\nnull\nptmx\npts\nrandom\nshm\nstderr\nstdin\nstdout\ntty\nurandom\nzero\n3\nnull\n"

// checkEnvironment runs envScript in a container of busybox:base as
// nobody, and checks it sees the user, directory, environment and
// hostname it was given; that it is PID 1 of a PID namespace with its own
// /proc (showing it alone) and has the minimal /dev; and that its PID,
// UTS, IPC and mount namespaces are not the test's (the host's).
func checkEnvironment(t *testing.T, s *imagetest.Session) {
	t.Helper()
	out := s.Must(nil, "run", "--rm", "-u", "nobody", "-w", "/made/here", "-e", "GREETING=hi", "--hostname", "box",
		"busybox:base", "sh", "-c", envScript).Stdout
	got, ns, _ := strings.Cut(out, "pid ")
	if got != envWant {
		t.Errorf("environment:\n got %q\nwant %q", got, envWant)
	}
	lines := imagetest.Lines("pid " + ns)
	if len(lines) != 4 {
		t.Fatalf("namespace lines: %q", lines)
	}
	for i, name := range []string{"pid", "uts", "ipc", "mnt"} {
		var st syscall.Stat_t
		if err := syscall.Stat("/proc/self/ns/"+name, &st); err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(lines[i])
		if len(f) != 2 || f[0] != name {
			t.Errorf("namespace line %q, want %s INODE", lines[i], name)
		} else if f[1] == strconv.FormatUint(st.Ino, 10) {
			t.Errorf("the container shares the host's %s namespace (%s)", name, f[1])
		}
	}
}

// TestRunVolumes: bind mounts (rw and ro) and named volumes bypass the
// union; named volumes outlive their containers and are shared.
func TestRunVolumes(t *testing.T) {
	s := session(t)
	host := t.TempDir()
	os.WriteFile(filepath.Join(host, "in"), []byte("from host\n"), 0o644)
	r := s.Run(nil, "run", "--name", "w", "-v", host+":/host", "-v", host+":/ro:ro", "-v", "data:/data",
		"busybox:base", "sh", "-c", "cat /host/in; echo out > /host/out; echo kept > /data/file; touch /ro/x 2>/dev/null || echo ro refused")
	if r.Code != 0 || r.Stdout != "from host\nro refused\n" {
		t.Errorf("run with volumes: %v", r)
	}
	if b, _ := os.ReadFile(filepath.Join(host, "out")); string(b) != "out\n" {
		t.Errorf("bind mount write: %q", b)
	}
	if d := imagetest.Lines(s.Must(nil, "diff", "w").Stdout); len(d) != 0 {
		t.Errorf("volume writes show in the container's diff: %q", d)
	}
	var vol []map[string]any
	json.Unmarshal([]byte(s.Must(nil, "volume", "inspect", "data").Stdout), &vol)
	mp, _ := vol[0]["mountpoint"].(string)
	if b, _ := os.ReadFile(filepath.Join(mp, "file")); string(b) != "kept\n" {
		t.Errorf("named volume content %q at %s", b, mp)
	}
	if out := s.Must(nil, "run", "--rm", "--volumes-from", "w", "busybox:base", "cat", "/data/file", "/host/in").Stdout; out != "kept\nfrom host\n" {
		t.Errorf("--volumes-from: %q", out)
	}
	if r := s.Run(nil, "volume", "rm", "data"); r.Code != 1 || !strings.Contains(r.Stderr, "used by container w") {
		t.Errorf("volume rm of a used volume: %v", r)
	}
	s.Must(nil, "rm", "w")
	if out := s.Must(nil, "run", "--rm", "-v", "data:/again", "busybox:base", "cat", "/again/file").Stdout; out != "kept\n" {
		t.Errorf("volume after its container went: %q", out)
	}
	s.Must(nil, "volume", "rm", "data")
	if out := s.Must(nil, "volume", "ls", "-q").Stdout; out != "" {
		t.Errorf("volume ls after rm: %q", out)
	}
}

// TestDetached: run -d, ps, logs, rm -f of a running container.
func TestDetached(t *testing.T) {
	s := session(t)
	id := strings.TrimSpace(s.Must(nil, "run", "-d", "--name", "bg", "busybox:base", "sh", "-c", "echo started; exec sleep 60").Stdout)
	if len(id) != 64 {
		t.Fatalf("run -d printed %q", id)
	}
	ps := s.Must(nil, "ps").Stdout
	if !strings.Contains(ps, id[:12]) || !strings.Contains(ps, "Up ") {
		t.Errorf("ps of a running container:\n%s", ps)
	}
	if r := s.Run(nil, "rm", "bg"); r.Code != 1 || !strings.Contains(r.Stderr, "is running") {
		t.Errorf("rm of a running container: %v", r)
	}
	if r := s.Run(nil, "start", "bg"); r.Code != 1 || !strings.Contains(r.Stderr, "running already") {
		t.Errorf("start of a running container: %v", r)
	}
	if out := s.Must(nil, "logs", "bg").Stdout; !strings.HasPrefix(out, "started\n") {
		t.Errorf("logs: %q", out)
	}
	s.Must(nil, "rm", "-f", "bg")
	if out := s.Must(nil, "ps", "-a", "-q").Stdout; out != "" {
		t.Errorf("ps after rm -f: %q", out)
	}
	// A command that ends at once, and one that does not start (docker's
	// status for it).
	s.Must(nil, "run", "-d", "--name", "quick", "busybox:base", "true")
	if r := s.Run(nil, "run", "-d", "--name", "missing", "busybox:base", "no-such-command"); r.Code != 127 ||
		!strings.Contains(r.Stderr, "executable file not found") {
		t.Errorf("run -d of a missing command: %v", r)
	}
	var list []psJSON
	for _, l := range imagetest.Lines(s.Must(nil, "ps", "-a", "--format", "json").Stdout) {
		var p psJSON
		json.Unmarshal([]byte(l), &p)
		list = append(list, p)
	}
	if len(list) != 2 {
		t.Errorf("ps -a: %+v", list)
	}
	for _, p := range list {
		want := map[string]int{"quick": 0, "missing": 127}[p.Names]
		if p.State != "exited" || p.ExitCode != want {
			t.Errorf("%s: %s %d, want exited %d", p.Names, p.State, p.ExitCode, want)
		}
	}
	if ok, _ := fstest.IsMountpoint(filepath.Join(s.Root, "containers", id, "merged")); ok {
		t.Error("union still mounted after rm -f")
	}
}

// TestMountUmount: a container's merged view at a path, outside any run.
func TestMountUmount(t *testing.T) {
	s := session(t)
	s.Must(nil, "create", "--name", "m", "busybox:base", "true")
	mnt := strings.TrimSpace(s.Must(nil, "mount", "m").Stdout)
	if b, err := os.ReadFile(filepath.Join(mnt, "etc/motd")); err != nil || string(b) != "welcome\n" {
		t.Fatalf("merged view at %s: %q, %v", mnt, b, err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "written"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A run while mounted uses the mount and leaves it.
	if out := s.Must(nil, "start", "-a", "m").Stdout; out != "" {
		t.Errorf("start: %q", out)
	}
	if ok, _ := fstest.IsMountpoint(mnt); !ok {
		t.Error("run unmounted a mount it did not make")
	}
	s.Must(nil, "umount", "m")
	if ok, _ := fstest.IsMountpoint(mnt); ok {
		t.Error("still mounted after umount")
	}
	if got := imagetest.Lines(s.Must(nil, "diff", "m").Stdout); !slices.Equal(got, []string{"A /written"}) {
		t.Errorf("diff after writing through the mount: %q", got)
	}
}

// TestRuncRuntime: --runtime runc runs the same container from an OCI
// bundle whose root is the union mount.
func TestRuncRuntime(t *testing.T) {
	if _, err := exec.LookPath("runc"); err != nil {
		testenv.Skipf(t, "needs runc")
	}
	s := session(t)
	host := t.TempDir()
	os.Chmod(host, 0o777)
	r := s.Run(nil, "run", "--name", "r", "--runtime", "runc", "-v", host+":/host", "-u", "nobody", "-w", "/tmp",
		"busybox:base", "sh", "-c", "id -u; pwd; echo $$; echo hi > /tmp/file; echo vol > /host/v; exit 5")
	if r.Code != 5 || r.Stdout != "65534\n/tmp\n1\n" {
		t.Fatalf("runc run: %v", r)
	}
	if b, _ := os.ReadFile(filepath.Join(host, "v")); string(b) != "vol\n" {
		t.Errorf("runc volume: %q", b)
	}
	if got := imagetest.Lines(s.Must(nil, "diff", "r").Stdout); !slices.Equal(got, []string{"C /tmp", "A /tmp/file"}) {
		t.Errorf("diff after runc: %q", got)
	}
	var cfg map[string]any
	b, err := os.ReadFile(filepath.Join(s.Root, "containers", containerID(t, s, "r"), "bundle", "config.json"))
	if err != nil || json.Unmarshal(b, &cfg) != nil {
		t.Fatalf("bundle config: %v", err)
	}
	if root := cfg["root"].(map[string]any)["path"]; !strings.HasSuffix(root.(string), "/merged") {
		t.Errorf("bundle root %v, want the union mount", root)
	}
}

func containerID(t *testing.T, s *imagetest.Session, name string) string {
	t.Helper()
	var insp []containerInspect
	if err := json.Unmarshal([]byte(s.Must(nil, "inspect", "--type", "container", name).Stdout), &insp); err != nil {
		t.Fatal(err)
	}
	return insp[0].ID
}

// TestBadInputLeavesStoreUnchanged: refused archives and tarballs say what
// is wrong in one line, exit 1 and store nothing.
func TestBadInputLeavesStoreUnchanged(t *testing.T) {
	fstest.RequireRoot(t)
	s := imagetest.NewSession(t)
	dir := t.TempDir()
	good := imagetest.Tar(t, []imagetest.Entry{{Name: "f", Body: []byte("content")}})
	s.Must(good, "import", "-", "good:1")
	archivePath := filepath.Join(dir, "good.tar")
	s.Must(nil, "save", "--format", "docker-archive", "-o", archivePath, "good:1")
	// Loads go to an empty store (a store that has a layer does not read
	// it again).
	s = imagetest.NewSession(t)
	s.Must(nil, "images")
	data, _ := os.ReadFile(archivePath)
	i := strings.Index(string(data), "content")
	corrupt := []byte(string(data))
	corrupt[i] = 'C'
	checkRefusals(t, s, map[string]refusal{
		"escape":      {[]string{"import", "-", "bad:1"}, imagetest.Tar(t, []imagetest.Entry{{Name: "../../etc/x"}}), "unsafe path"},
		"absolute":    {[]string{"import", "-", "bad:1"}, imagetest.Tar(t, []imagetest.Entry{{Name: "/etc/x"}}), "absolute name"},
		"duplicate":   {[]string{"import", "-", "bad:1"}, imagetest.Tar(t, []imagetest.Entry{{Name: "a"}, {Name: "a"}}), "named twice"},
		"hardlink":    {[]string{"import", "-", "bad:1"}, imagetest.Tar(t, []imagetest.Entry{{Name: "h", Type: tar.TypeLink, Link: "../../etc/passwd"}}), "hard link"},
		"truncated":   {[]string{"load"}, data[:len(data)/2], "corrupt or truncated"},
		"corrupted":   {[]string{"load"}, corrupt, "digest mismatch"},
		"not archive": {[]string{"load"}, good, "not a docker-archive"},
	})
}

// TestInspectDamagedImage: an image whose layer is gone from the store is
// reported as damaged, with the fix, and a non-zero exit; inspect used to
// print "Layers": null and exit 0.
func TestInspectDamagedImage(t *testing.T) {
	fstest.RequireRoot(t)
	s := imagetest.NewSession(t)
	s.Must(imagetest.Tar(t, []imagetest.Entry{{Name: "f", Body: []byte("x")}}), "import", "-", "hurt:1")
	layers, err := filepath.Glob(filepath.Join(s.Root, "layers", "*"))
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers in the store: %q, %v; want one", layers, err)
	}
	if err := os.RemoveAll(layers[0]); err != nil {
		t.Fatal(err)
	}
	r := s.Run(nil, "inspect", "hurt:1")
	if r.Code == 0 || !strings.Contains(r.Stderr, "damaged") || !strings.Contains(r.Stderr, "rmi") {
		t.Errorf("inspect of an image without its layer: %v\nwant a non-zero exit and an error naming the damage and the fix", r)
	}
}

// parseTable checks that out is a table whose header is exactly the
// columns given (names apart by two spaces or more, as docker prints
// them), and returns its rows, each cell cut at its header's column.
func parseTable(t *testing.T, out string, columns ...string) []map[string]string {
	t.Helper()
	lines := imagetest.Lines(out)
	if len(lines) == 0 {
		t.Fatalf("no table header in %q", out)
	}
	header := regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(lines[0]), -1)
	if !slices.Equal(header, columns) {
		t.Fatalf("table header %q, want exactly %q", header, columns)
	}
	h := []rune(lines[0])
	var starts []int
	for i := range h {
		if h[i] != ' ' && (i == 0 || (h[i-1] == ' ' && i > 1 && h[i-2] == ' ')) {
			starts = append(starts, i)
		}
	}
	var rows []map[string]string
	for _, l := range lines[1:] {
		r := []rune(l)
		row := map[string]string{}
		for i, c := range columns {
			from, to := min(starts[i], len(r)), len(r)
			if i+1 < len(starts) {
				to = min(starts[i+1], len(r))
			}
			if from > 0 && from < len(r) && r[from-1] != ' ' {
				t.Errorf("table row %q: column %s does not start at the header's", l, c)
			}
			row[c] = strings.TrimSpace(string(r[from:to]))
		}
		rows = append(rows, row)
	}
	return rows
}

// TestVolumeVerbs: volume create, ls, inspect and rm; a created volume's
// data outlives the container that wrote it; bad names are refused in one
// line and nothing is created.
func TestVolumeVerbs(t *testing.T) {
	s := session(t)
	if out := s.Must(nil, "volume", "create", "keep").Stdout; out != "keep\n" {
		t.Errorf("volume create printed %q", out)
	}
	if out := s.Must(nil, "volume", "create", "keep").Stdout; out != "keep\n" {
		t.Errorf("volume create of an existing volume printed %q (docker returns it)", out)
	}
	rows := parseTable(t, s.Must(nil, "volume", "ls").Stdout, "DRIVER", "VOLUME NAME")
	if len(rows) != 1 || rows[0]["DRIVER"] != "local" || rows[0]["VOLUME NAME"] != "keep" {
		t.Errorf("volume ls: %q", rows)
	}
	var vol []map[string]any
	if err := json.Unmarshal([]byte(s.Must(nil, "volume", "inspect", "keep").Stdout), &vol); err != nil || len(vol) != 1 {
		t.Fatalf("volume inspect: %v %v", vol, err)
	}
	mp, _ := vol[0]["mountpoint"].(string)
	if want := filepath.Join(s.Root, "volumes", "keep", "_data"); mp != want {
		t.Errorf("mountpoint %q, want %q", mp, want)
	}

	s.Must(nil, "run", "--name", "writer", "-v", "keep:/data", "busybox:base", "sh", "-c", "echo persisted > /data/f; mkdir /data/d")
	s.Must(nil, "rm", "writer")
	if b, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(b) != "persisted\n" {
		t.Errorf("volume data after its container was removed: %q, %v", b, err)
	}
	if out := s.Must(nil, "run", "--rm", "-v", "keep:/elsewhere:ro", "busybox:base", "sh", "-c",
		"cat /elsewhere/f; touch /elsewhere/x 2>/dev/null || echo read-only").Stdout; out != "persisted\nread-only\n" {
		t.Errorf("the volume in a new container: %q", out)
	}

	before := imagetest.StoreFiles(t, s.Root)
	for _, bad := range []string{"../escape", "a/b", ".hidden", "-dash", "with space", "x$y", strings.Repeat("n", 129)} {
		r := s.Run(nil, "volume", "create", "--", bad)
		if r.Code != 1 || !strings.Contains(r.Stderr, "volume name") || !strings.Contains(r.Stderr, "use letters, digits") ||
			strings.Count(r.Stderr, "\n") != 1 {
			t.Errorf("volume create %q: %v\nwant exit 1 and one line that says which names are allowed", bad, r)
		}
		if strings.HasPrefix(bad, ".") {
			continue // -v ./x:/data is a host path
		}
		if r := s.Run(nil, "run", "--rm", "-v", bad+":/data", "busybox:base", "true"); r.Code != 125 || !strings.Contains(r.Stderr, "volume name") {
			t.Errorf("run -v %q:/data: %v\nwant exit 125 and the volume name error", bad, r)
		}
	}
	if after := imagetest.StoreFiles(t, s.Root); !slices.Equal(before, after) {
		t.Errorf("refused volume names changed the store:\nbefore %q\nafter  %q", before, after)
	}
	if r := s.Run(nil, "volume", "rm", "ghost"); r.Code != 1 || !strings.Contains(r.Stderr, `no volume "ghost"`) {
		t.Errorf("volume rm of a missing volume: %v", r)
	}

	s.Must(nil, "volume", "rm", "keep")
	if _, err := os.Stat(mp); !os.IsNotExist(err) {
		t.Errorf("volume data still there after volume rm: %v", err)
	}
	if rows := parseTable(t, s.Must(nil, "volume", "ls").Stdout, "DRIVER", "VOLUME NAME"); len(rows) != 0 {
		t.Errorf("volume ls after rm: %q", rows)
	}
}

// refusal is a command that must fail: exit 1, one line of stderr that
// holds want.
type refusal struct {
	args  []string
	stdin []byte
	want  string
}

// checkRefusals runs each refusal on s and checks that it fails as it
// should and leaves the store as it was.
func checkRefusals(t *testing.T, s *imagetest.Session, cases map[string]refusal) {
	t.Helper()
	before := imagetest.StoreFiles(t, s.Root)
	for name, c := range cases {
		r := s.Run(c.stdin, c.args...)
		if r.Code != 1 || !strings.Contains(r.Stderr, c.want) || strings.Count(r.Stderr, "\n") != 1 {
			t.Errorf("%s: %v\nwant exit 1 and one line with %q", name, r, c.want)
		}
		if after := imagetest.StoreFiles(t, s.Root); !slices.Equal(before, after) {
			t.Errorf("%s: store changed:\nbefore %q\nafter  %q", name, before, after)
		}
	}
}
