package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
)

type report struct {
	Machine   machine      `json:"machine"`
	Command   string       `json:"command"`
	Commit    string       `json:"library_commit,omitempty"`
	Runs      int          `json:"runs"`
	Streams   int          `json:"streams"`
	SizeBytes int64        `json:"size_bytes,omitempty"`
	WAN       *wanReport   `json:"wan,omitempty"`
	Cases     []caseReport `json:"cases"`
	Failures  int          `json:"failures"`
}

type wanReport struct {
	DelayMs    float64 `json:"delay_ms_each_way"`
	RateMbit   float64 `json:"rate_mbit_s"`
	QueueBytes int     `json:"queue_bytes"`
	SizeBytes  int64   `json:"size_bytes"`
}

type machine struct {
	NumCPU     int    `json:"nproc"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPU        string `json:"cpu"`
	Go         string `json:"go"`
	Kernel     string `json:"kernel"`
	OS         string `json:"os"`
}

// caseReport is one case: medians over the runs, with min and max. A nil
// pointer is n/a (no second channel for a ping, or a failed case).
type caseReport struct {
	Name    string `json:"name"`
	Samples int    `json:"samples"`

	MBps    float64 `json:"mbps"`
	MBpsMin float64 `json:"mbps_min"`
	MBpsMax float64 `json:"mbps_max"`

	CPU    float64 `json:"cpu_s_per_gib"`
	CPUMin float64 `json:"cpu_s_per_gib_min"`
	CPUMax float64 `json:"cpu_s_per_gib_max"`

	Alloc    float64 `json:"alloc_mb_per_gib"`
	AllocMin float64 `json:"alloc_mb_per_gib_min"`
	AllocMax float64 `json:"alloc_mb_per_gib_max"`

	P50    *float64 `json:"call_p50_us"`
	P50Min *float64 `json:"call_p50_us_min"`
	P50Max *float64 `json:"call_p50_us_max"`
	P99    *float64 `json:"call_p99_us"`
	P99Min *float64 `json:"call_p99_us_min"`
	P99Max *float64 `json:"call_p99_us_max"`

	Multi      *float64 `json:"streams_mbps"`
	MultiMin   *float64 `json:"streams_mbps_min"`
	MultiMax   *float64 `json:"streams_mbps_max"`
	Slowest    *float64 `json:"streams_slowest_share"`
	SlowestMin *float64 `json:"streams_slowest_share_min"`
	SlowestMax *float64 `json:"streams_slowest_share_max"`
	MultiVsOne *float64 `json:"streams_vs_one"`
	MBpsVsTLS  *float64 `json:"mbps_vs_raw_tls"`
	CPUVsTLS   *float64 `json:"cpu_vs_raw_tls"`
	AllocVsTLS *float64 `json:"alloc_vs_raw_tls"`
	// Paired: the ratio to raw-tls within each run, then median, min, max
	// (drift between runs cancels out).
	PairedVsTLS    *float64 `json:"mbps_vs_raw_tls_paired"`
	PairedVsTLSMin *float64 `json:"mbps_vs_raw_tls_paired_min"`
	PairedVsTLSMax *float64 `json:"mbps_vs_raw_tls_paired_max"`
	// Per-run values, in run order.
	RunsMBps []float64  `json:"runs_mbps"`
	RunsCPU  []float64  `json:"runs_cpu_s_per_gib"`
	RunsP99  []*float64 `json:"runs_call_p99_us"`
}

func ptr(f float64) *float64 { return &f }

// addPaired sets the per-run ratios to raw-tls of the same run.
func (c *caseReport) addPaired(s, ref *samples) {
	byRun := map[int]float64{}
	for _, r := range ref.one {
		byRun[r.run] = r.mbps
	}
	var ratios []result
	for _, r := range s.one {
		if t := byRun[r.run]; t > 0 {
			ratios = append(ratios, result{mbps: r.mbps / t})
		}
	}
	if st, ok := statOf(ratios, func(r result) float64 { return r.mbps }); ok {
		c.PairedVsTLS, c.PairedVsTLSMin, c.PairedVsTLSMax = ptr(st.med), ptr(st.lo), ptr(st.hi)
	}
}

func summarize(name string, s *samples) caseReport {
	cr := caseReport{Name: name, Samples: len(s.one)}
	for _, r := range s.one {
		cr.RunsMBps = append(cr.RunsMBps, r.mbps)
		cr.RunsCPU = append(cr.RunsCPU, r.cpuPerGiB)
		if math.IsNaN(r.p99) {
			cr.RunsP99 = append(cr.RunsP99, nil)
		} else {
			cr.RunsP99 = append(cr.RunsP99, ptr(r.p99))
		}
	}
	if st, ok := statOf(s.one, func(r result) float64 { return r.mbps }); ok {
		cr.MBps, cr.MBpsMin, cr.MBpsMax = st.med, st.lo, st.hi
	}
	if st, ok := statOf(s.one, func(r result) float64 { return r.cpuPerGiB }); ok {
		cr.CPU, cr.CPUMin, cr.CPUMax = st.med, st.lo, st.hi
	}
	if st, ok := statOf(s.one, func(r result) float64 { return r.allocPerGiB }); ok {
		cr.Alloc, cr.AllocMin, cr.AllocMax = st.med, st.lo, st.hi
	}
	if st, ok := statOf(s.one, func(r result) float64 { return r.p50 }); ok {
		cr.P50, cr.P50Min, cr.P50Max = ptr(st.med), ptr(st.lo), ptr(st.hi)
	}
	if st, ok := statOf(s.one, func(r result) float64 { return r.p99 }); ok {
		cr.P99, cr.P99Min, cr.P99Max = ptr(st.med), ptr(st.lo), ptr(st.hi)
	}
	if st, ok := statOf(s.many, func(r result) float64 { return r.mbps }); ok {
		cr.Multi, cr.MultiMin, cr.MultiMax = ptr(st.med), ptr(st.lo), ptr(st.hi)
		if cr.MBps > 0 {
			cr.MultiVsOne = ptr(st.med / cr.MBps)
		}
	}
	if st, ok := statOf(s.many, func(r result) float64 { return r.share }); ok {
		cr.Slowest, cr.SlowestMin, cr.SlowestMax = ptr(st.med), ptr(st.lo), ptr(st.hi)
	}
	return cr
}

// addRatios compares every case with raw-tls of the same network.
func (r *report) addRatios() {
	ref := map[string]caseReport{}
	for _, c := range r.Cases {
		if base, suf, _ := strings.Cut(c.Name, "@"); base == "raw-tls" {
			ref[suf] = c
		}
	}
	for i := range r.Cases {
		c := &r.Cases[i]
		_, suf, _ := strings.Cut(c.Name, "@")
		t, ok := ref[suf]
		if !ok || c.Samples == 0 {
			continue
		}
		if t.MBps > 0 {
			c.MBpsVsTLS = ptr(c.MBps / t.MBps)
		}
		if t.CPU > 0 {
			c.CPUVsTLS = ptr(c.CPU / t.CPU)
		}
		if t.Alloc > 0 {
			c.AllocVsTLS = ptr(c.Alloc / t.Alloc)
		}
	}
}

func f1(p *float64, format string) string {
	if p == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, *p)
}

func rng(lo, hi float64, format string) string {
	return fmt.Sprintf(format+"–"+format, lo, hi)
}

// printTable writes the results as a Markdown table.
func printTable(w io.Writer, r *report) {
	m := r.Machine
	fmt.Fprintf(w, "Machine: %d CPUs (%s), %s, Linux %s. Runs: %d, medians (min–max).\n", m.NumCPU, m.CPU, m.Go, m.Kernel, r.Runs)
	if r.SizeBytes > 0 {
		fmt.Fprintf(w, "Loopback: %s per transfer.", sizeStr(r.SizeBytes))
	}
	if r.WAN != nil {
		fmt.Fprintf(w, " @wan: %s per transfer, %.0f ms each way, %.0f Mbit/s, %s queue.", sizeStr(r.WAN.SizeBytes), r.WAN.DelayMs, r.WAN.RateMbit, sizeStr(int64(r.WAN.QueueBytes)))
	}
	fmt.Fprintf(w, "\n\n")
	fmt.Fprintf(w, "| case | MB/s (min–max) | × raw-tls | × raw-tls per run (min–max) | CPU s/GiB | × raw-tls | alloc MB/GiB | × raw-tls | call p50 µs | call p99 µs (min–max) | %d streams MB/s | × 1 stream | slowest / fair share (min) |\n", r.Streams)
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range r.Cases {
		if c.Samples == 0 {
			fmt.Fprintf(w, "| %s | failed | | | | | | | | | | | |\n", c.Name)
			continue
		}
		p99 := "n/a"
		if c.P99 != nil {
			p99 = fmt.Sprintf("%.0f (%s)", *c.P99, rng(*c.P99Min, *c.P99Max, "%.0f"))
		}
		slow := "n/a"
		if c.Slowest != nil {
			slow = fmt.Sprintf("%.2f (%.2f)", *c.Slowest, *c.SlowestMin)
		}
		paired := "n/a"
		if c.PairedVsTLS != nil {
			paired = fmt.Sprintf("%.2f (%s)", *c.PairedVsTLS, rng(*c.PairedVsTLSMin, *c.PairedVsTLSMax, "%.2f"))
		}
		fmt.Fprintf(w, "| %s | %.0f (%s) | %s | %s | %.2f | %s | %.1f | %s | %s | %s | %s | %s | %s |\n",
			c.Name, c.MBps, rng(c.MBpsMin, c.MBpsMax, "%.0f"), f1(c.MBpsVsTLS, "%.2f"), paired,
			c.CPU, f1(c.CPUVsTLS, "%.2f"), c.Alloc, f1(c.AllocVsTLS, "%.1f"),
			f1(c.P50, "%.0f"), p99, f1(c.Multi, "%.0f"), f1(c.MultiVsOne, "%.2f"), slow)
	}
	if r.Failures > 0 {
		fmt.Fprintf(w, "\n%d measurements FAILED (see stderr).\n", r.Failures)
	}
}

func sizeStr(n int64) string {
	switch {
	case n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d B", n)
}

func machineInfo() machine {
	m := machine{NumCPU: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}
