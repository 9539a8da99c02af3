package bench

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestQuickSmoke runs the quick mode end to end, as CI does: real mounts of
// every driver available here, the report and the charts written into a
// temporary directory. It checks that the tool works and that the files
// are well formed; it never asserts a speed.
func TestQuickSmoke(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: kernel overlayfs mounts, /dev/fuse and dropping caches")
	}
	if err := needFUSE(); err != nil {
		t.Skipf("no FUSE: %v", err)
	}
	bin := os.Getenv("UNIONMOUNT_BIN")
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "unionmount")
		out, err := exec.Command("go", "build", "-o", bin, "../cmd/unionmount").CombinedOutput()
		if err != nil {
			t.Fatalf("build unionmount: %v\n%s", err, out)
		}
	}

	cfg := QuickConfig()
	tmp := t.TempDir()
	cfg.DataDir = filepath.Join(tmp, "data")
	cfg.OutDir = filepath.Join(tmp, "out")
	cfg.UnionmountBin = bin
	cfg.Format = "json"
	// The baselines and our default driver keep it well under CI's budget;
	// make bench-quick runs every driver.
	cfg.Drivers = []string{"plain", "kernel", "fuse-overlayfs", "unionmount"}
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	defer cancel()
	start := time.Now()
	res, err := Measure(ctx, cfg, testLog{t})
	if err != nil {
		t.Fatalf("quick run: %v", err)
	}
	t.Logf("quick run took %s", time.Since(start).Round(time.Millisecond))
	files, err := Write(res, cfg.OutDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", strings.Join(files, " "))

	ran := map[string]bool{}
	for _, d := range res.Drivers {
		if d.Skipped != "" {
			t.Logf("driver %s skipped: %s", d.Name, d.Skipped)
			continue
		}
		ran[d.Name] = true
	}
	for _, must := range []string{"plain", "kernel", "unionmount"} {
		if !ran[must] {
			t.Errorf("driver %s did not run", must)
		}
	}
	for _, c := range res.Skipped {
		t.Logf("case %s skipped: %s", c.Name, c.Skipped)
	}
	// Our own driver must get through every case; the others are logged.
	for _, r := range res.Runs {
		if r.Err == "" {
			continue
		}
		if strings.HasPrefix(r.Driver, "unionmount") || r.Driver == "kernel" || r.Driver == "plain" {
			t.Errorf("%s on %s: %s", r.Case, r.Driver, r.Err)
		} else {
			t.Logf("%s on %s: %s", r.Case, r.Driver, r.Err)
		}
	}
	rows := Summarize(res)
	for _, r := range rows {
		if mm := r.Mismatch([]string{"plain", "kernel", "unionmount", "unionmount-nopassthrough"}); mm != "" {
			t.Errorf("%s: results differ: %s", r.Metric, mm)
		}
	}

	report, err := os.ReadFile(filepath.Join(cfg.OutDir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# unionbench results", "## Ratios to kernel overlayfs", "walk cold", "copy-up"} {
		if !strings.Contains(string(report), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	for _, g := range Groups {
		p := filepath.Join(cfg.OutDir, g.Name+".svg")
		if err := checkSVG(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		if !strings.Contains(string(report), "("+g.Name+".svg)") {
			t.Errorf("report.md does not show %s.svg", g.Name)
		}
	}
	b, err := os.ReadFile(filepath.Join(cfg.OutDir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		Summary []Row       `json:"summary"`
		Runs    []RunResult `json:"runs"`
	}
	if err := json.Unmarshal(b, &parsed); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	if len(parsed.Summary) != len(rows) || len(parsed.Runs) != len(res.Runs) {
		t.Errorf("results.json: %d rows, %d runs; want %d, %d", len(parsed.Summary), len(parsed.Runs), len(rows), len(res.Runs))
	}
}

// checkSVG parses a file as XML and checks that its root is an <svg> that
// draws something.
func checkSVG(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	dec := xml.NewDecoder(f)
	root, shapes := "", 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			switch se.Name.Local {
			case "rect", "polyline", "circle", "line":
				shapes++
			}
		}
	}
	if root != "svg" {
		return errors.New("root element is " + root + ", not svg")
	}
	if shapes < 3 {
		return errors.New("draws nothing")
	}
	return nil
}

// testLog sends progress lines to the test log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
