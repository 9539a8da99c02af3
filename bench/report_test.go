package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeResults is a small result set: two metrics of one bar group and a
// two-point scaling curve, on three drivers, three repetitions.
func fakeResults() *Results {
	res := &Results{Config: DefaultConfig(), Drivers: []DriverStatus{{Name: "kernel"}, {Name: "fuse-overlayfs"},
		{Name: "unionmount"}, {Name: "unionfs-fuse", Skipped: "not installed"}}}
	res.Config.Format = "csv"
	scale := map[string]time.Duration{"kernel": 1, "fuse-overlayfs": 3, "unionmount": 2}
	for rep := 0; rep < 3; rep++ {
		for _, d := range []string{"kernel", "fuse-overlayfs", "unionmount"} {
			ms := scale[d] * time.Millisecond * time.Duration(10+rep)
			res.Runs = append(res.Runs,
				RunResult{Case: "walk-cold", Group: "metadata", Driver: d, Rep: rep, PeakRSS: 1 << 20,
					Samples: []Sample{{Metric: "walk cold", Ops: 100, Wall: ms, Check: "100 entries"}}},
				RunResult{Case: "lookup-1", Group: "layers", Driver: d, Rep: rep,
					Samples: []Sample{{Metric: "lookup, 1 layers", Series: "lookup", X: 1, Ops: 10, Wall: ms}}},
				RunResult{Case: "lookup-8", Group: "layers", Driver: d, Rep: rep,
					Samples: []Sample{{Metric: "lookup, 8 layers", Series: "lookup", X: 8, Ops: 10, Wall: 4 * ms}}},
			)
		}
	}
	res.Runs = append(res.Runs, RunResult{Case: "walk-cold", Group: "metadata", Driver: "unionmount", Rep: 3, Err: "mount failed"})
	return res
}

func TestSummarizeRatios(t *testing.T) {
	rows := Summarize(fakeResults())
	if len(rows) != 3 {
		t.Fatalf("%d rows, want 3", len(rows))
	}
	walk := rows[0]
	st := walk.Stats["unionmount"]
	if st.N != 3 || st.Median != 22*time.Millisecond || st.Min != 20*time.Millisecond || st.Max != 24*time.Millisecond {
		t.Errorf("unionmount walk: n=%d median=%s min=%s max=%s", st.N, st.Median, st.Min, st.Max)
	}
	if got := walk.Ratio("unionmount", "kernel"); got < 1.999 || got > 2.001 {
		t.Errorf("ratio to kernel %.3f, want 2", got)
	}
	if got := walk.Ratio("unionmount", "fuse-overlayfs"); got < 0.666 || got > 0.667 {
		t.Errorf("ratio to fuse-overlayfs %.4f, want 0.667", got)
	}
	if len(st.Failures) != 1 {
		t.Errorf("failures %q, want the mount failure", st.Failures)
	}
	if st.PerOp() != 220*time.Microsecond {
		t.Errorf("per op %s", st.PerOp())
	}
}

func TestMismatchNamesDrivers(t *testing.T) {
	res := fakeResults()
	res.Runs[0].Samples[0].Check = "99 entries" // kernel, rep 0
	rows := Summarize(res)
	mm := rows[0].Mismatch([]string{"kernel", "fuse-overlayfs", "unionmount"})
	if !strings.Contains(mm, "kernel: 99 entries") || !strings.Contains(mm, "unionmount: 100 entries") {
		t.Errorf("mismatch %q", mm)
	}
}

func TestWriteReportAndCharts(t *testing.T) {
	dir := t.TempDir()
	files, err := Write(fakeResults(), dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"metadata.svg", "layers.svg", "report.md", "results.csv"}
	if len(files) != len(want) {
		t.Fatalf("wrote %q, want %q", files, want)
	}
	for i, f := range files {
		if filepath.Base(f) != want[i] {
			t.Errorf("file %d is %s, want %s", i, f, want[i])
		}
		if strings.HasSuffix(f, ".svg") {
			if err := checkSVG(f); err != nil {
				t.Errorf("%s: %v", f, err)
			}
		}
	}
	md, _ := os.ReadFile(filepath.Join(dir, "report.md"))
	for _, w := range []string{"| walk cold | 3.00 | 2.00 |", "| *geometric mean* | *3.00* | *2.00* |", "skipped: not installed", "mount failed"} {
		if !bytes.Contains(md, []byte(w)) {
			t.Errorf("report.md lacks %q", w)
		}
	}
	csv, _ := os.ReadFile(filepath.Join(dir, "results.csv"))
	if n := bytes.Count(csv, []byte("\n")); n != 1+3*3 {
		t.Errorf("results.csv has %d lines, want 10", n)
	}
}
