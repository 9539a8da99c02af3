package main

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/unionmount/unionmount/image/imagetest"
	"github.com/unionmount/unionmount/internal/testenv"
)

// requireBuild skips a build test on a machine without root, FUSE,
// busybox-static or the given tools, saying why; under CI=true, where make
// deps installs them all, it fails instead: a build test must not pass
// there by not running.
func requireBuild(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		missing = append(missing, "/dev/fuse")
	} else {
		f.Close()
	}
	if _, err := os.Stat(imagetest.Busybox); err != nil {
		missing = append(missing, "busybox-static")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	testenv.Skipf(t, "needs %s (make deps installs them; run as root)", strings.Join(missing, ", "))
}

// writeContext writes files (path -> content; a path ending in "/" is a
// directory) into a new build context directory.
func writeContext(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, body := range files {
		full := filepath.Join(dir, p)
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// imageConfig reads a stored image's config.
func imageConfig(t *testing.T, s *imagetest.Session, ref string) v1.Image {
	t.Helper()
	var insp []imageInspect
	if err := json.Unmarshal([]byte(s.Must(nil, "inspect", "--type", "image", ref).Stdout), &insp); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(s.Root, "images", strings.TrimPrefix(insp[0].ID, "sha256:"), "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c v1.Image
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// imageIDOf returns the ID of the image ref names, "" when there is none.
func imageIDOf(t *testing.T, s *imagetest.Session, ref string) string {
	t.Helper()
	r := s.Run(nil, "inspect", "--type", "image", ref)
	if r.Code != 0 {
		return ""
	}
	var insp []imageInspect
	if err := json.Unmarshal([]byte(r.Stdout), &insp); err != nil || len(insp) != 1 {
		t.Fatalf("inspect %s: %v", ref, err)
	}
	return insp[0].ID
}

// walkthrough is Docker's getting-started Dockerfile, on busybox.
const walkthrough = `FROM busybox:base
RUN mkdir -p /app
WORKDIR /app
COPY . .
RUN echo built > /app/built.txt && cat src/index.html
EXPOSE 8000
CMD ["sh", "-c", "cat /app/src/index.html /app/built.txt"]
`

// stepLines returns the lines of a build's output that show how each step
// ended: "Step N/M : ...", then " ---> Using cache" or not.
func cachedSteps(out string) []bool {
	var cached []bool
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "Step ") {
			cached = append(cached, false)
		}
		if l == " ---> Using cache" {
			cached[len(cached)-1] = true
		}
	}
	return cached
}

// TestBuildWalkthrough: the walkthrough builds with docker's output, one
// history entry per instruction (empty_layer where no file changed), runs,
// rebuilds from the cache, rebuilds from the changed step on, and its
// cache goes with rmi.
func TestBuildWalkthrough(t *testing.T) {
	requireBuild(t)
	s := session(t)
	ctx := writeContext(t, map[string]string{
		"Dockerfile": walkthrough, "src/index.html": "hello\n", "app.py": "print('hi')\n",
	})
	r := s.Must(nil, "build", "-t", "walk:1", ctx)
	want := []*regexp.Regexp{
		regexp.MustCompile(`^Step 1/7 : FROM busybox:base$`),
		regexp.MustCompile(`^ ---> [0-9a-f]{12}$`),
		regexp.MustCompile(`^Step 2/7 : RUN mkdir -p /app$`),
		regexp.MustCompile(`^ ---> Running in [0-9a-f]{12}$`),
		regexp.MustCompile(`^Removing intermediate container [0-9a-f]{12}$`),
		regexp.MustCompile(`^ ---> [0-9a-f]{12}$`),
		regexp.MustCompile(`^Step 3/7 : WORKDIR /app$`),
		regexp.MustCompile(`^ ---> [0-9a-f]{12}$`),
		regexp.MustCompile(`^Step 4/7 : COPY \. \.$`),
		regexp.MustCompile(`^ ---> [0-9a-f]{12}$`),
		regexp.MustCompile(`^Step 5/7 : RUN echo built > /app/built.txt && cat src/index.html$`),
		regexp.MustCompile(`^ ---> Running in [0-9a-f]{12}$`),
		regexp.MustCompile(`^hello$`), // the RUN's output
		regexp.MustCompile(`^Removing intermediate container [0-9a-f]{12}$`),
		regexp.MustCompile(`^ ---> [0-9a-f]{12}$`),
		regexp.MustCompile(`^Step 6/7 : EXPOSE 8000$`),
		regexp.MustCompile(`^ ---> [0-9a-f]{12}$`),
		regexp.MustCompile(`^Step 7/7 : CMD \["sh", "-c", "cat /app/src/index.html /app/built.txt"\]$`),
		regexp.MustCompile(`^ ---> [0-9a-f]{12}$`),
		regexp.MustCompile(`^Successfully built [0-9a-f]{12}$`),
		regexp.MustCompile(`^Successfully tagged walk:1$`),
	}
	lines := imagetest.Lines(r.Stdout)
	if len(lines) != len(want) {
		t.Fatalf("build printed %d lines, want %d:\n%s", len(lines), len(want), r.Stdout)
	}
	for i, l := range lines {
		if !want[i].MatchString(l) {
			t.Errorf("line %d: %q, want %s", i+1, l, want[i])
		}
	}
	id := strings.TrimPrefix(lines[len(lines)-2], "Successfully built ")
	if out := s.Must(nil, "run", "--rm", "walk:1").Stdout; out != "hello\nbuilt\n" {
		t.Errorf("walk:1 runs %q", out)
	}

	cfg := imageConfig(t, s, "walk:1")
	if cfg.Config.WorkingDir != "/app" || !slices.Equal(cfg.Config.Cmd, []string{"sh", "-c", "cat /app/src/index.html /app/built.txt"}) {
		t.Errorf("config: %+v", cfg.Config)
	}
	if _, ok := cfg.Config.ExposedPorts["8000/tcp"]; !ok {
		t.Errorf("exposed ports: %v", cfg.Config.ExposedPorts)
	}
	type hist struct {
		createdBy string
		empty     bool
	}
	var got []hist
	for _, h := range cfg.History[1:] { // [0]: the import
		got = append(got, hist{h.CreatedBy, h.EmptyLayer})
	}
	wantHist := []hist{
		{"/bin/sh -c mkdir -p /app", false},
		{"/bin/sh -c #(nop) WORKDIR /app", true}, // RUN made it
		{"/bin/sh -c #(nop) COPY dir:", false},
		{"/bin/sh -c echo built > /app/built.txt && cat src/index.html", false},
		{"/bin/sh -c #(nop)  EXPOSE 8000/tcp", true},
		{`/bin/sh -c #(nop)  CMD ["sh","-c","cat /app/src/index.html /app/built.txt"]`, true},
	}
	if len(got) != len(wantHist) {
		t.Fatalf("history: %+v", got)
	}
	for i, h := range got {
		if !strings.HasPrefix(h.createdBy, wantHist[i].createdBy) || h.empty != wantHist[i].empty {
			t.Errorf("history %d: %+v, want %+v", i, h, wantHist[i])
		}
	}
	if n := len(cfg.RootFS.DiffIDs); n != 4 {
		t.Errorf("%d layers, want 4 (base, mkdir, COPY, RUN)", n)
	}
	if rows := parseTable(t, s.Must(nil, "history", "walk:1").Stdout, "LAYER", "CREATED", "CREATED BY", "SIZE", "COMMENT"); len(rows) != 7 {
		t.Errorf("history shows %d rows, want 7", len(rows))
	}

	// Nothing changed: every step from the cache, the same image.
	r = s.Must(nil, "build", "-t", "walk:1", ctx)
	if c := cachedSteps(r.Stdout); !slices.Equal(c, []bool{false, true, true, true, true, true, true}) {
		t.Errorf("rebuild: cached steps %v\n%s", c, r.Stdout)
	}
	if !strings.Contains(r.Stdout, "Successfully built "+id+"\n") || strings.Contains(r.Stdout, "Running in") {
		t.Errorf("rebuild made a new image or ran a step:\n%s", r.Stdout)
	}
	// --no-cache runs everything again.
	if c := cachedSteps(s.Must(nil, "build", "--no-cache", ctx).Stdout); slices.Contains(c, true) {
		t.Errorf("--no-cache used the cache: %v", c)
	}

	// A changed file: the COPY and every later step run again, none before.
	os.WriteFile(filepath.Join(ctx, "src/index.html"), []byte("changed\n"), 0o644)
	r = s.Must(nil, "build", "-t", "walk:1", ctx)
	if c := cachedSteps(r.Stdout); !slices.Equal(c, []bool{false, true, true, false, false, false, false}) {
		t.Errorf("rebuild after a change: cached steps %v\n%s", c, r.Stdout)
	}
	if out := s.Must(nil, "run", "--rm", "walk:1").Stdout; out != "changed\nbuilt\n" {
		t.Errorf("walk:1 after the change runs %q", out)
	}
	// A mode change is a change too.
	os.Chmod(filepath.Join(ctx, "app.py"), 0o600)
	if c := cachedSteps(s.Must(nil, "build", ctx).Stdout); !slices.Equal(c, []bool{false, true, true, false, false, false, false}) {
		t.Errorf("rebuild after a chmod: cached steps %v", c)
	}

	// The cache goes with the images that hold it.
	s.Must(nil, "rmi", "walk:1")
	for _, row := range parseTable(t, s.Must(nil, "images").Stdout, "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE") {
		if row["REPOSITORY"] == "<none>" { // the images the edits above replaced
			s.Must(nil, "rmi", row["IMAGE ID"])
		}
	}
	if got := imagetest.Lines(s.Must(nil, "images", "-a").Stdout); len(got) != 2 {
		t.Errorf("images after rmi of everything but the base: %q", got)
	}
	if c := cachedSteps(s.Must(nil, "build", ctx).Stdout); slices.Contains(c, true) {
		t.Errorf("build after rmi used a cache that should have gone: %v", c)
	}
	if containers := imagetest.Lines(s.Must(nil, "ps", "-a", "-q").Stdout); len(containers) > 0 {
		t.Errorf("builds left containers: %q", containers)
	}
}

// noLeftovers fails unless the store has no container, no mount below it
// and no half-made layer or image.
func noLeftovers(t *testing.T, s *imagetest.Session, what string) {
	t.Helper()
	if cs := imagetest.Lines(s.Must(nil, "ps", "-a", "-q").Stdout); len(cs) > 0 {
		t.Errorf("%s: containers left: %q", what, cs)
	}
	ents, _ := os.ReadDir(filepath.Join(s.Root, "containers"))
	if len(ents) > 0 {
		t.Errorf("%s: container directories left: %d", what, len(ents))
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), s.Root+"/") {
		t.Errorf("%s: a mount is left below the store", what)
	}
	for kind, record := range map[string]string{"layers": "layer.json", "images": "image.json"} {
		ents, _ := os.ReadDir(filepath.Join(s.Root, kind))
		for _, e := range ents {
			if _, err := os.Stat(filepath.Join(s.Root, kind, e.Name(), record)); err != nil {
				t.Errorf("%s: %s/%s has no %s", what, kind, e.Name(), record)
			}
		}
	}
}

// TestBuildBadInput: each bad Dockerfile or context fails with one line
// that says what is wrong, a non-zero exit (a RUN's own status when it
// fails), no tag moved and nothing left behind.
func TestBuildBadInput(t *testing.T) {
	requireBuild(t)
	s := session(t)
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("secret\n"), 0o600)
	good := writeContext(t, map[string]string{"Dockerfile": "FROM busybox:base\nRUN echo good > /good\n"})
	s.Must(nil, "build", "-q", "-t", "app:1", good)
	tagged := imageIDOf(t, s, "app:1")
	cases := []struct {
		name       string
		dockerfile string
		code       int
		want       string
	}{
		{"syntax", "FROM busybox:base\nRUN true\n\nENV\n", 1, "Dockerfile:4: ENV requires at least one argument"},
		{"unknown", "FROM busybox:base\nRUN true\nFROBNICATE x\n", 1, "Dockerfile:3: unknown instruction: FROBNICATE"},
		{"parent", "FROM busybox:base\nCOPY ../secret /x\n", 1, "forbidden path outside the build context: ../secret"},
		{"symlink", "FROM busybox:base\nCOPY link /x\n", 1, "forbidden path outside the build context: link: a symlink that leaves it"},
		{"base", "FROM 127.0.0.1:1/nosuch:image\nRUN true\n", 1, "pull 127.0.0.1:1/nosuch:image: cannot reach the registry"},
		{"run", "FROM busybox:base\nRUN echo made > /made\nRUN exit 3\n", 3, "The command '/bin/sh -c exit 3' returned a non-zero code: 3"},
		{"missing", "FROM busybox:base\nCOPY nosuch /x\n", 1, "nosuch: no such file in the build context"},
	}
	for _, c := range cases {
		dir := writeContext(t, map[string]string{"Dockerfile": c.dockerfile, "sub/": ""})
		os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "link"))
		r := s.Run(nil, "build", "-t", "app:1", dir)
		if r.Code != c.code || !strings.Contains(strings.ToLower(r.Stderr), strings.ToLower(c.want)) || strings.Count(r.Stderr, "\n") != 1 {
			t.Errorf("%s: %v\nwant exit %d and one line with %q", c.name, r, c.code, c.want)
		}
		if now := imageIDOf(t, s, "app:1"); now != tagged {
			t.Errorf("%s: app:1 moved from %s to %s", c.name, tagged, now)
		}
		noLeftovers(t, s, c.name)
	}
}

// TestBuildInterrupt: Ctrl-C during a RUN ends the build with a non-zero
// status and leaves no container, mount or half layer, and no tag.
func TestBuildInterrupt(t *testing.T) {
	requireBuild(t)
	s := session(t)
	dir := writeContext(t, map[string]string{"Dockerfile": "FROM busybox:base\nRUN echo started; sleep 600\n"})
	cmd := exec.Command(s.Bin, "--root", s.Root, "--unionmount", s.Unionmount, "build", "-t", "slow:1", dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if sc.Text() == "started" { // the RUN runs
			break
		}
	}
	cmd.Process.Signal(syscall.SIGINT)
	for sc.Scan() {
	}
	err = cmd.Wait()
	if err == nil || !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("interrupted build: %v, stderr %q", err, stderr.String())
	}
	if id := imageIDOf(t, s, "slow:1"); id != "" {
		t.Errorf("slow:1 was tagged: %s", id)
	}
	noLeftovers(t, s, "interrupt")
}

// TestBuildFeatures: ONBUILD triggers run when built upon and do not pass
// on; ADD fetches a URL (mode 0600); a Dockerfile on stdin and a tar
// context on stdin; -f; --target of a missing stage; unused build args
// are reported.
func TestBuildFeatures(t *testing.T) {
	requireBuild(t)
	s := session(t)
	base := writeContext(t, map[string]string{
		"Dockerfile": "FROM busybox:base\nONBUILD RUN echo triggered > /trigger.txt\nONBUILD COPY f.txt /from-trigger.txt\n",
	})
	s.Must(nil, "build", "-q", "-t", "onbase:1", base)
	if cfg := imageConfig(t, s, "onbase:1"); len(cfg.History) != 3 {
		t.Errorf("onbase history: %+v", cfg.History)
	}
	child := writeContext(t, map[string]string{"Dockerfile": "FROM onbase:1\nRUN cat /trigger.txt\n", "f.txt": "from the child's context\n"})
	r := s.Must(nil, "build", "-t", "onchild:1", child)
	if !strings.Contains(r.Stdout, "# Executing 2 build triggers\n") || !strings.Contains(r.Stdout, "\ntriggered\n") {
		t.Errorf("triggers did not run:\n%s", r.Stdout)
	}
	if out := s.Must(nil, "run", "--rm", "onchild:1", "cat", "/from-trigger.txt").Stdout; out != "from the child's context\n" {
		t.Errorf("trigger COPY: %q", out)
	}
	var raw map[string]json.RawMessage
	insp := imageIDOf(t, s, "onchild:1")
	b, _ := os.ReadFile(filepath.Join(s.Root, "images", strings.TrimPrefix(insp, "sha256:"), "config.json"))
	json.Unmarshal(b, &raw)
	if strings.Contains(string(raw["config"]), "OnBuild\":[") {
		t.Errorf("the child kept its base's triggers: %s", raw["config"])
	}

	// ADD of a URL, served here.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Last-Modified", "Tue, 02 Jan 2024 03:04:05 GMT")
		io.WriteString(w, "fetched "+r.URL.Path+"\n")
	}))
	defer srv.Close()
	df := "FROM busybox:base\nADD " + srv.URL + "/dir/remote.txt /downloads/\n"
	s.Must([]byte(df), "build", "-q", "-t", "url:1", "-")
	if out := s.Must(nil, "run", "--rm", "url:1", "sh", "-c", "cat /downloads/remote.txt; stat -c %a /downloads/remote.txt").Stdout; out != "fetched /dir/remote.txt\n600\n" {
		t.Errorf("ADD URL: %q", out)
	}

	// A tar context on stdin, with a Dockerfile named by -f inside it.
	ctxTar := imagetest.Tar(t, []imagetest.Entry{
		{Name: "build/", Type: tar.TypeDir},
		{Name: "build/My.Dockerfile", Body: []byte("FROM busybox:base\nARG USED\nCOPY data.txt /\nRUN echo \"$USED $HTTP_PROXY\" > /args\n")},
		{Name: "data.txt", Body: []byte("from the tar\n")},
	})
	r = s.Must(ctxTar, "build", "-f", "build/My.Dockerfile", "--build-arg", "USED=1", "--build-arg", "UNUSED=2",
		"--build-arg", "HTTP_PROXY=http://proxy.invalid", "-t", "tarctx:1", "-")
	if !strings.Contains(r.Stdout, "[Warning] One or more build-args [UNUSED] were not consumed") {
		t.Errorf("no warning about the unused build arg:\n%s", r.Stdout)
	}
	if out := s.Must(nil, "run", "--rm", "tarctx:1", "cat", "/data.txt", "/args").Stdout; out != "from the tar\n1 http://proxy.invalid\n" {
		t.Errorf("tar context, build args: %q", out)
	}
	if cfg := imageConfig(t, s, "tarctx:1"); strings.Contains(jsonString(cfg), "proxy.invalid") {
		t.Errorf("the proxy build arg went into the image: %s", jsonString(cfg.History))
	}
	// COPY needs a context; a Dockerfile on stdin has none.
	if r := s.Run([]byte("FROM busybox:base\nCOPY x /\n"), "build", "-"); r.Code != 1 || !strings.Contains(r.Stderr, "no build context") {
		t.Errorf("COPY without a context: %v", r)
	}
	if r := s.Run(nil, "build", "--target", "nosuch", base); r.Code != 1 || !strings.Contains(r.Stderr, "--target nosuch: no stage of that name") {
		t.Errorf("--target nosuch: %v", r)
	}
	noLeftovers(t, s, "features")
}

// TestBuildHostileAdd: ADD unpacks an archive into its destination as into
// a root (as docker unpacks it chrooted there): a symlink in it resolves
// inside the destination, and a ".." entry or an entry below a dangling
// symlink fails the build.
func TestBuildHostileAdd(t *testing.T) {
	requireBuild(t)
	s := session(t)
	dir := writeContext(t, map[string]string{"Dockerfile": "FROM busybox:base\nADD evil.tar /unpacked/\n"})
	os.WriteFile(filepath.Join(dir, "evil.tar"), imagetest.Tar(t, []imagetest.Entry{
		{Name: "etc/", Type: tar.TypeDir},
		{Name: "esc", Type: tar.TypeSymlink, Link: "/etc"},
		{Name: "esc/evil", Body: []byte("evil\n")},
		{Name: "up", Type: tar.TypeSymlink, Link: "../../etc"},
		{Name: "up/evil2", Body: []byte("evil\n")},
	}), 0o644)
	s.Must(nil, "build", "-q", "-t", "add:1", dir)
	out := s.Must(nil, "run", "--rm", "add:1", "sh", "-c", "ls /etc; find /unpacked -type f | sort").Stdout
	if lines := imagetest.Lines(out); slices.Contains(lines, "evil") || slices.Contains(lines, "evil2") || !strings.Contains(out, "/unpacked/etc/evil\n") || !strings.Contains(out, "/unpacked/etc/evil2\n") {
		t.Errorf("ADD of a tar with symlinks out of its destination: %q", out)
	}
	for name, entries := range map[string][]imagetest.Entry{
		"unsafe path": {{Name: "../escape", Body: []byte("x")}},
		"is a symlink to a directory that does not exist": {
			{Name: "dangling", Type: tar.TypeSymlink, Link: "/nowhere"},
			{Name: "dangling/x", Body: []byte("x")},
		},
	} {
		os.WriteFile(filepath.Join(dir, "evil.tar"), imagetest.Tar(t, entries), 0o644)
		if r := s.Run(nil, "build", "-t", "add:1", dir); r.Code != 1 || !strings.Contains(r.Stderr, name) {
			t.Errorf("ADD of a tar: %v\nwant %q", r, name)
		}
	}
	noLeftovers(t, s, "hostile ADD")
}

// TestBuildCacheLargeContext: a COPY of a 10,000-file context that did not
// change is found in the cache (its checksum is taken before anything is
// mounted or copied); one changed file among them runs it again.
func TestBuildCacheLargeContext(t *testing.T) {
	requireBuild(t)
	s := plainSession(t)
	files := map[string]string{"Dockerfile": "FROM busybox:base\nCOPY . /ctx/\nRUN ls /ctx | wc -l\n"}
	for i := 0; i < 10_000; i++ {
		files[fmt.Sprintf("d%02d/f%05d", i%100, i)] = fmt.Sprintf("file %d\n", i)
	}
	dir := writeContext(t, files)
	first := s.Must(nil, "build", "-t", "big:1", dir).Stdout
	if c := cachedSteps(first); !slices.Equal(c, []bool{false, false, false}) {
		t.Fatalf("first build: cached %v", c)
	}
	again := s.Must(nil, "build", "-t", "big:1", dir).Stdout
	if c := cachedSteps(again); !slices.Equal(c, []bool{false, true, true}) || lastLine(again) != lastLine(first) {
		t.Errorf("rebuild of an unchanged 10,000-file context: cached %v\n%s", c, again)
	}
	os.WriteFile(filepath.Join(dir, "d42", "f04242"), []byte("changed\n"), 0o644)
	if c := cachedSteps(s.Must(nil, "build", "-t", "big:1", dir).Stdout); !slices.Equal(c, []bool{false, false, false}) {
		t.Errorf("rebuild after one of 10,000 files changed: cached %v", c)
	}
}
