package bench

import (
	"slices"
	"sort"
	"strings"
	"time"
)

// Stat is one metric on one driver over the repetitions.
type Stat struct {
	Driver   string        `json:"driver"`
	N        int           `json:"reps"`
	Median   time.Duration `json:"median_ns"`
	Min      time.Duration `json:"min_ns"`
	Max      time.Duration `json:"max_ns"`
	Ops      int64         `json:"ops,omitempty"`
	Bytes    int64         `json:"bytes,omitempty"`
	CPU      time.Duration `json:"daemon_cpu_ns,omitempty"` // median
	PeakRSS  int64         `json:"peak_rss_bytes,omitempty"`
	FDs      int           `json:"fds,omitempty"`
	Checks   []string      `json:"checks,omitempty"` // distinct values
	Failures []string      `json:"failures,omitempty"`
}

// PerOp is the median time of one operation, 0 when the metric counts none.
func (s *Stat) PerOp() time.Duration {
	if s == nil || s.Ops == 0 || s.N == 0 {
		return 0
	}
	return s.Median / time.Duration(s.Ops)
}

// MiBps is the median throughput, 0 when the metric moves no bytes.
func (s *Stat) MiBps() float64 {
	if s == nil || s.Bytes == 0 || s.Median <= 0 {
		return 0
	}
	return float64(s.Bytes) / float64(mib) / s.Median.Seconds()
}

// Row is one metric on every driver.
type Row struct {
	Metric string           `json:"metric"`
	Case   string           `json:"case"`
	Group  string           `json:"group"`
	Series string           `json:"series,omitempty"`
	X      float64          `json:"x,omitempty"`
	Stats  map[string]*Stat `json:"stats"`
}

// Ratio is driver's median over base's median, 0 when either is missing.
func (r *Row) Ratio(driver, base string) float64 {
	a, b := r.Stats[driver], r.Stats[base]
	if a == nil || b == nil || a.N == 0 || b.N == 0 || b.Median <= 0 {
		return 0
	}
	return float64(a.Median) / float64(b.Median)
}

// Mismatch describes drivers whose results disagree ("" when all agree).
func (r *Row) Mismatch(order []string) string {
	seen := map[string][]string{}
	var values []string
	for _, d := range order {
		st := r.Stats[d]
		if st == nil {
			continue
		}
		for _, c := range st.Checks {
			if _, ok := seen[c]; !ok {
				values = append(values, c)
			}
			seen[c] = append(seen[c], d)
		}
	}
	if len(values) < 2 {
		return ""
	}
	var parts []string
	for _, v := range values {
		parts = append(parts, strings.Join(seen[v], ", ")+": "+v)
	}
	return strings.Join(parts, "; ")
}

// Summarize folds the runs into one row per metric, in the order the
// metrics first appear.
func Summarize(res *Results) []*Row {
	var rows []*Row
	byMetric := map[string]*Row{}
	walls := map[[2]string][]time.Duration{}
	cpus := map[[2]string][]time.Duration{}
	for _, run := range res.Runs {
		for _, s := range run.Samples {
			row := byMetric[s.Metric]
			if row == nil {
				row = &Row{Metric: s.Metric, Case: run.Case, Group: run.Group, Series: s.Series, X: s.X, Stats: map[string]*Stat{}}
				byMetric[s.Metric] = row
				rows = append(rows, row)
			}
			st := row.Stats[run.Driver]
			if st == nil {
				st = &Stat{Driver: run.Driver}
				row.Stats[run.Driver] = st
			}
			st.N++
			st.Ops, st.Bytes = s.Ops, s.Bytes
			if s.Check != "" && !slices.Contains(st.Checks, s.Check) {
				st.Checks = append(st.Checks, s.Check)
			}
			st.PeakRSS = max(st.PeakRSS, run.PeakRSS)
			st.FDs = max(st.FDs, run.FDs)
			k := [2]string{s.Metric, run.Driver}
			walls[k] = append(walls[k], s.Wall)
			cpus[k] = append(cpus[k], s.CPU)
		}
	}
	for _, row := range rows {
		for d, st := range row.Stats {
			k := [2]string{row.Metric, d}
			st.Median, st.Min, st.Max = spread(walls[k])
			st.CPU, _, _ = spread(cpus[k])
		}
	}
	// Failures belong to every metric of their case on that driver.
	for _, run := range res.Runs {
		if run.Err == "" {
			continue
		}
		for _, row := range rows {
			if row.Case != run.Case {
				continue
			}
			st := row.Stats[run.Driver]
			if st == nil {
				st = &Stat{Driver: run.Driver}
				row.Stats[run.Driver] = st
			}
			if !slices.Contains(st.Failures, run.Err) {
				st.Failures = append(st.Failures, run.Err)
			}
		}
	}
	return rows
}

// spread returns the median, minimum and maximum (the median of an even
// count is the mean of the middle two).
func spread(ds []time.Duration) (median, lo, hi time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	n := len(s)
	median = s[n/2]
	if n%2 == 0 {
		median = (s[n/2-1] + s[n/2]) / 2
	}
	return median, s[0], s[n-1]
}
