package bench

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/testenv"
)

// TestQuickSmoke runs the built `unionbench --quick` end to end, as CI
// does: real mounts of the baselines and of unionmount with and without
// passthrough, the report and the charts written into a temporary
// directory, then a second, one-case run for the CSV output. It checks that
// the command works and that its files are well formed; it never asserts a
// speed.
func TestQuickSmoke(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skipf(t, "needs root: kernel overlayfs mounts, /dev/fuse and dropping caches")
	}
	if err := needFUSE(); err != nil {
		testenv.Skipf(t, "no FUSE: %v", err)
	}
	bins := t.TempDir()
	unionbench := filepath.Join(bins, "unionbench")
	if out, err := exec.Command("go", "build", "-o", unionbench, "../cmd/unionbench").CombinedOutput(); err != nil {
		t.Fatalf("build unionbench: %v\n%s", err, out)
	}
	unionmount := os.Getenv("UNIONMOUNT_BIN")
	if unionmount == "" {
		unionmount = filepath.Join(bins, "unionmount")
		if out, err := exec.Command("go", "build", "-o", unionmount, "../cmd/unionmount").CombinedOutput(); err != nil {
			t.Fatalf("build unionmount: %v\n%s", err, out)
		}
	}
	tmp := t.TempDir()
	// The rootless drivers' daemon runs as another user: it must reach the
	// data (t.TempDir is 0700).
	if err := os.Chmod(filepath.Dir(tmp), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	data, out := filepath.Join(tmp, "data"), filepath.Join(tmp, "out")

	// Every driver but unionfs-fuse (not installed by scripts/install-deps.sh).
	drivers := []string{"plain", "kernel", "kernel-userns", "fuse-overlayfs", "unionmount", "unionmount-nopassthrough", "unionmount-rootless"}
	ours := []string{"plain", "kernel", "kernel-userns", "unionmount", "unionmount-nopassthrough", "unionmount-rootless"}
	stdout := runUnionbench(t, unionbench, "--quick", "--data", data, "--out", out, "--format", "json",
		"--unionmount", unionmount, "--drivers", strings.Join(drivers, ","))
	var written []string
	for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
		written = append(written, filepath.Base(l))
	}
	for _, want := range []string{"report.md", "results.json", "metadata.svg"} {
		if !slices.Contains(written, want) {
			t.Errorf("stdout names %v, not %s", written, want)
		}
	}

	b, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Config  Config         `json:"config"`
		Drivers []DriverStatus `json:"drivers"`
		Skipped []CaseStatus   `json:"skipped_cases"`
		Runs    []RunResult    `json:"runs"`
		Summary []Row          `json:"summary"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	if !res.Config.Quick || res.Config.Reps != 1 || res.Config.Sizes.TreeFiles != QuickConfig().Sizes.TreeFiles {
		t.Errorf("results.json config is not the quick one: quick=%v reps=%d tree=%d", res.Config.Quick, res.Config.Reps, res.Config.Sizes.TreeFiles)
	}
	ran := map[string]bool{}
	for _, d := range res.Drivers {
		if d.Skipped != "" {
			t.Logf("driver %s skipped: %s", d.Name, d.Skipped)
			continue
		}
		ran[d.Name] = true
	}
	for _, d := range res.Drivers {
		if d.Skipped != "" && slices.Contains(ours, d.Name) {
			t.Errorf("driver %s did not run: %s", d.Name, d.Skipped)
		}
	}
	for _, c := range res.Skipped {
		t.Logf("case %s skipped: %s", c.Name, c.Skipped)
	}
	// Our own drivers and the kernel must get through every case; the
	// others are logged.
	perDriver := map[string]int{}
	for _, r := range res.Runs {
		perDriver[r.Driver]++
		if r.Err == "" {
			continue
		}
		if slices.Contains(ours, r.Driver) {
			t.Errorf("%s on %s: %s", r.Case, r.Driver, r.Err)
		} else {
			t.Logf("%s on %s: %s", r.Case, r.Driver, r.Err)
		}
	}
	cases := len(Cases(res.Config.Sizes)) - len(res.Skipped)
	for d := range ran {
		if perDriver[d] != cases {
			t.Errorf("driver %s ran %d cases, want %d", d, perDriver[d], cases)
		}
	}
	if len(res.Summary) == 0 {
		t.Fatal("results.json has no summary rows")
	}
	for _, r := range res.Summary {
		if mm := r.Mismatch(ours); mm != "" {
			t.Errorf("%s: results differ: %s", r.Metric, mm)
		}
	}

	report, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# unionbench results", "(quick mode", "## Ratios to kernel overlayfs",
		"## Ratios to fuse-overlayfs", "| unionmount-nopassthrough |", "| unionmount-rootless |", "| kernel-userns |", "walk cold", "copy-up"} {
		if !strings.Contains(string(report), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	for _, g := range Groups {
		p := filepath.Join(out, g.Name+".svg")
		if err := checkSVG(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		if !strings.Contains(string(report), "("+g.Name+".svg)") {
			t.Errorf("report.md does not show %s.svg", g.Name)
		}
	}

	// CSV: one case on two drivers, the data already generated.
	out2 := filepath.Join(tmp, "out-csv")
	runUnionbench(t, unionbench, "--quick", "--data", data, "--out", out2, "--format", "csv",
		"--unionmount", unionmount, "--drivers", "kernel,unionmount", "--cases", "readdir-stat")
	f, err := os.Open(filepath.Join(out2, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("results.csv: %v", err)
	}
	if len(recs) != 3 || recs[0][0] != "metric" || recs[1][0] != "readdir+stat" || recs[1][5] != "kernel" || recs[2][5] != "unionmount" {
		t.Errorf("results.csv: want a header and readdir+stat on kernel and unionmount, got %q", recs)
	}
	if len(recs) == 3 && recs[2][14] != "" {
		if r, err := strconv.ParseFloat(recs[2][14], 64); err != nil || r <= 0 {
			t.Errorf("results.csv: unionmount's ratio to the kernel %q is not a positive number", recs[2][14])
		}
	}
}

// runUnionbench runs the built command, which must exit 0, and returns its
// stdout (the files written). Its progress (stderr) goes to the test log.
func runUnionbench(t *testing.T, bin string, args ...string) string {
	t.Helper()
	// Only a hang reaches this; the quick mode takes well under it.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, testLog{t}
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("unionbench %s: %v", strings.Join(args, " "), err)
	}
	t.Logf("unionbench %s: %s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	return stdout.String()
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
