package bench

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The two references every figure is divided by.
const (
	refKernel = "kernel"
	refFuse   = "fuse-overlayfs"
)

// Write puts the Markdown report, one SVG chart per group and, for
// --format csv or json, the machine-readable results into dir. It returns
// the files written.
func Write(res *Results, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	rows := Summarize(res)
	var files []string
	write := func(name string, fn func(w io.Writer) error) error {
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		if err := fn(f); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", p, err)
		}
		if err := f.Close(); err != nil {
			return err
		}
		files = append(files, p)
		return nil
	}
	charts := map[string]string{}
	for _, g := range Groups {
		var grows []*Row
		for _, r := range rows {
			if r.Group == g.Name {
				grows = append(grows, r)
			}
		}
		if len(grows) == 0 {
			continue
		}
		name := g.Name + ".svg"
		err := write(name, func(w io.Writer) error {
			if g.Lines {
				return lineChart(w, g.Title, g.XLabel, grows, driverOrder(res))
			}
			return barChart(w, g.Title, grows, driverOrder(res))
		})
		if err != nil {
			return files, err
		}
		charts[g.Name] = name
	}
	if err := write("report.md", func(w io.Writer) error { return markdown(w, res, rows, charts) }); err != nil {
		return files, err
	}
	switch res.Config.Format {
	case "csv":
		err := write("results.csv", func(w io.Writer) error { return writeCSV(w, res, rows) })
		return files, err
	case "json":
		err := write("results.json", func(w io.Writer) error {
			e := json.NewEncoder(w)
			e.SetIndent("", "  ")
			return e.Encode(struct {
				*Results
				Summary []*Row `json:"summary"`
			}{res, rows})
		})
		return files, err
	}
	return files, nil
}

// driverOrder lists the drivers that ran, in report order.
func driverOrder(res *Results) []string {
	var out []string
	for _, d := range res.Drivers {
		if d.Skipped == "" {
			out = append(out, d.Name)
		}
	}
	return out
}

func markdown(w io.Writer, res *Results, rows []*Row, charts map[string]string) error {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	order := driverOrder(res)
	m := res.Machine
	p("# unionbench results\n\n")
	mode := ""
	if res.Config.Quick {
		mode = " (quick mode: tiny sizes, a smoke test, not a measurement)"
	}
	p("Measured %s%s on Linux %s, %d × %s, %d GiB RAM, data on %s; load average at the start %s. ",
		res.Started.Format("2006-01-02 15:04 MST"), mode, m.Kernel, m.CPUs, m.CPU, m.MemGiB, orDash(m.DataFS), m.Load)
	p("%d repetition(s), drivers interleaved with a rotating start; the whole run took %s.\n\n",
		res.Config.Reps, res.Duration.Round(time.Second))
	if res.Config.Args != "" {
		p("Command: `%s`\n\n", res.Config.Args)
	}
	p("Times are medians over the repetitions. A ratio is a driver's median time divided by the reference's: " +
		"**1.00 = as fast, 2.00 = takes twice as long, 0.50 = twice as fast**. " +
		"Spread is (max − min) ÷ median. Daemon CPU is the FUSE server's user+system time during the timed section; " +
		"peak RSS (VmHWM) and open fds are the daemon's at the end of the case. See bench/README.md for what each workload stands for.\n\n")

	p("## Drivers\n\n| driver | version | status |\n|---|---|---|\n")
	for _, d := range res.Drivers {
		status := "ran"
		if d.Skipped != "" {
			status = "skipped: " + d.Skipped
		}
		p("| %s | %s | %s |\n", d.Name, orDash(d.Version), mdEscape(status))
	}
	p("\n")

	for _, ref := range []string{refKernel, refFuse} {
		if !contains(order, ref) {
			continue
		}
		p("## Ratios to %s\n\n", refTitle(ref))
		p("| workload |")
		var cols []string
		for _, d := range order {
			if d != ref {
				cols = append(cols, d)
				p(" %s |", d)
			}
		}
		p("\n|---|%s\n", strings.Repeat("---:|", len(cols)))
		for _, r := range rows {
			p("| %s |", r.Metric)
			for _, d := range cols {
				p(" %s |", ratioCell(r, d, ref))
			}
			p("\n")
		}
		p("| *geometric mean* |")
		for _, d := range cols {
			if g := geomean(rows, d, ref); g > 0 {
				p(" *%.2f* |", g)
			} else {
				p(" — |")
			}
		}
		p("\n\n")
	}

	for _, g := range Groups {
		var grows []*Row
		for _, r := range rows {
			if r.Group == g.Name {
				grows = append(grows, r)
			}
		}
		if len(grows) == 0 {
			continue
		}
		p("## %s\n\n", g.Title)
		if c := charts[g.Name]; c != "" {
			p("![%s](%s)\n\n", g.Title, c)
		}
		seen := map[string]bool{}
		for _, r := range grows {
			if seen[r.Case] {
				continue
			}
			seen[r.Case] = true
			for _, c := range res.Cases {
				if c.Name == r.Case {
					p("- **%s**: %s\n", c.Name, c.About)
				}
			}
		}
		p("\n| workload | driver | median | spread | per op / rate | × kernel | × fuse-overlayfs | daemon CPU | peak RSS | fds |\n")
		p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, r := range grows {
			for _, d := range order {
				st := r.Stats[d]
				if st == nil {
					continue
				}
				if st.N == 0 {
					p("| %s | %s | failed | | | | | | | |\n", r.Metric, d)
					continue
				}
				p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Metric, d, fmtDur(st.Median),
					fmtPct(st), rateCell(st), ratioCell(r, d, refKernel), ratioCell(r, d, refFuse),
					daemonCell(st.CPU, st.PeakRSS > 0, fmtCPU), daemonCell(st.PeakRSS, st.PeakRSS > 0, fmtMiB),
					daemonCell(st.FDs, st.PeakRSS > 0, strconv.Itoa))
			}
		}
		p("\n")
	}

	var problems []string
	for _, c := range res.Skipped {
		problems = append(problems, fmt.Sprintf("- case %s skipped: %s", c.Name, mdEscape(c.Skipped)))
	}
	for _, run := range res.Runs {
		if run.Err != "" {
			problems = append(problems, fmt.Sprintf("- %s on %s, repetition %d: %s", run.Case, run.Driver, run.Rep+1, mdEscape(run.Err)))
		}
	}
	for _, r := range rows {
		if mm := r.Mismatch(order); mm != "" {
			problems = append(problems, fmt.Sprintf("- %s: results differ between drivers (%s)", r.Metric, mdEscape(mm)))
		}
	}
	p("## Failures and result checks\n\n")
	if len(problems) == 0 {
		p("Every run finished, and every driver produced the same results (entry counts, bytes read, sizes after copy-up).\n")
	} else {
		p("%s\n", strings.Join(problems, "\n"))
	}
	return nil
}

func writeCSV(w io.Writer, res *Results, rows []*Row) error {
	c := csv.NewWriter(w)
	c.Write([]string{"metric", "case", "group", "series", "x", "driver", "reps", "median_s", "min_s", "max_s",
		"ops", "bytes", "per_op_s", "mib_per_s", "ratio_kernel", "ratio_fuse_overlayfs",
		"daemon_cpu_s", "peak_rss_bytes", "fds", "checks", "failures"})
	for _, r := range rows {
		for _, d := range driverOrder(res) {
			st := r.Stats[d]
			if st == nil {
				continue
			}
			c.Write([]string{r.Metric, r.Case, r.Group, r.Series, ftoa(r.X), d, strconv.Itoa(st.N),
				secs(st.Median), secs(st.Min), secs(st.Max), strconv.FormatInt(st.Ops, 10), strconv.FormatInt(st.Bytes, 10),
				secs(st.PerOp()), ftoa(st.MiBps()), ftoa(r.Ratio(d, refKernel)), ftoa(r.Ratio(d, refFuse)),
				secs(st.CPU), strconv.FormatInt(st.PeakRSS, 10), strconv.Itoa(st.FDs),
				strings.Join(st.Checks, "; "), strings.Join(st.Failures, "; ")})
		}
	}
	c.Flush()
	return c.Error()
}

// geomean is the geometric mean of driver's ratios to ref over the rows
// where both ran: one number per driver, every workload weighted alike.
func geomean(rows []*Row, driver, ref string) float64 {
	sum, n := 0.0, 0
	for _, r := range rows {
		if x := r.Ratio(driver, ref); x > 0 {
			sum += math.Log(x)
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return math.Exp(sum / float64(n))
}

func refTitle(ref string) string {
	if ref == refKernel {
		return "kernel overlayfs"
	}
	return ref
}

func ratioCell(r *Row, d, ref string) string {
	if d == ref {
		return "1.00"
	}
	x := r.Ratio(d, ref)
	if x == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", x)
}

func rateCell(st *Stat) string {
	switch {
	case st.Bytes > 0 && st.Ops == 0:
		return fmt.Sprintf("%.0f MiB/s", st.MiBps())
	case st.Ops > 1:
		return fmtDur(st.PerOp()) + "/op"
	}
	return ""
}

func daemonCell[T any](v T, ok bool, f func(T) string) string {
	if !ok {
		return "—"
	}
	return f(v)
}

func fmtPct(st *Stat) string {
	if st.N < 2 || st.Median <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(st.Max-st.Min)/float64(st.Median))
}

// fmtDur prints a duration with three significant digits in a fitting unit.
func fmtDur(d time.Duration) string {
	s := d.Seconds()
	switch {
	case s >= 1:
		return fmt.Sprintf("%.3g s", s)
	case s >= 1e-3:
		return fmt.Sprintf("%.3g ms", s*1e3)
	case s >= 1e-6:
		return fmt.Sprintf("%.3g µs", s*1e6)
	}
	return fmt.Sprintf("%d ns", d.Nanoseconds())
}

// fmtCPU prints CPU time, which /proc counts in 10 ms ticks.
func fmtCPU(d time.Duration) string {
	if d < 10*time.Millisecond {
		return "<10 ms"
	}
	return fmtDur(d)
}

func fmtMiB(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/float64(mib)) }

func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'g', 6, 64) }

func ftoa(f float64) string {
	if f == 0 || math.IsNaN(f) {
		return ""
	}
	return strconv.FormatFloat(f, 'g', 6, 64)
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
