// Command bench measures virtrpc against raw TCP and TLS, libvirt's
// call-per-chunk design, yamux, smux, x/crypto/ssh and gRPC, on loopback
// and through an emulated WAN. See README.md.
//
//	go run . [-size 1GiB] [-runs 5] [-json FILE] [-wan=false] [-cases a,b]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"
)

type config struct {
	size, wanSize   int64
	runs, streams   int
	maxTime, wanMax time.Duration
	ping            time.Duration
	loopback, wanOn bool
	wan             wanParams
	only            map[string]bool
	jsonFile        string
	commit          string
}

func main() { os.Exit(realMain()) }

func realMain() int {
	var c config
	size := flag.String("size", "1GiB", "bytes per loopback transfer (one stream, and all 16 together)")
	wanSize := flag.String("wansize", "256MiB", "bytes per transfer through the emulated WAN")
	flag.IntVar(&c.runs, "runs", 5, "runs; cases are interleaved within each run")
	flag.IntVar(&c.streams, "streams", 16, "concurrent streams in the fairness test")
	flag.DurationVar(&c.maxTime, "maxtime", 15*time.Second, "a loopback transfer stops after this long")
	flag.DurationVar(&c.wanMax, "wanmaxtime", 10*time.Second, "a WAN transfer stops after this long (slow windows)")
	flag.DurationVar(&c.ping, "ping", 2*time.Millisecond, "interval of the small call made during a one-stream transfer")
	flag.BoolVar(&c.loopback, "loopback", true, "run the loopback cases")
	flag.BoolVar(&c.wanOn, "wan", true, "run the cases through the emulated WAN too")
	flag.DurationVar(&c.wan.delay, "delay", 20*time.Millisecond, "WAN delay each way")
	rate := flag.Float64("rate", 1000, "WAN rate, Mbit/s")
	queue := flag.String("queue", "4MiB", "WAN bottleneck queue")
	cases := flag.String("cases", "", "comma-separated case names (default all)")
	flag.StringVar(&c.jsonFile, "json", "", "write the results as JSON to this file")
	flag.StringVar(&c.commit, "commit", "", "the library's commit, recorded in the JSON")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	memProfile := flag.String("memprofile", "", "write an allocation profile of the whole run to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	if *memProfile != "" {
		runtime.MemProfileRate = 64 << 10
		defer func() {
			runtime.GC() // the allocs profile is as of the last GC
			if f, err := os.Create(*memProfile); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	var err error
	if c.size, err = parseSize(*size); err == nil {
		if c.wanSize, err = parseSize(*wanSize); err == nil {
			var q int64
			q, err = parseSize(*queue)
			c.wan.queue = int(q)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	c.wan.rate = *rate * 1e6 / 8
	if *cases != "" {
		c.only = map[string]bool{}
		for _, n := range strings.Split(*cases, ",") {
			c.only[strings.TrimSpace(n)] = true
		}
	}
	return mainRun(c)
}

func mainRun(c config) int {
	rep, err := run(context.Background(), c)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	rep.Command = "go run . " + strings.Join(os.Args[1:], " ")
	printTable(os.Stdout, rep)
	if c.jsonFile != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err == nil {
			err = os.WriteFile(c.jsonFile, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if rep.Failures > 0 {
		return 1
	}
	return 0
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}} {
		if strings.HasSuffix(s, u.suf) {
			s, mult = strings.TrimSuffix(s, u.suf), u.m
			break
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return int64(f * float64(mult)), nil
}

func allCases() []benchCase {
	var cs []benchCase
	cs = append(cs, rawCases()...)
	cs = append(cs, virtrpcCases()...)
	cs = append(cs, muxCases()...)
	cs = append(cs, sshCases()...)
	cs = append(cs, grpcCases()...)
	return cs
}

// samples collects one case's results over the runs.
type samples struct {
	one, many []result
}

func run(ctx context.Context, c config) (*report, error) {
	var cases []benchCase
	for _, bc := range allCases() {
		if c.only == nil || c.only[bc.name] {
			cases = append(cases, bc)
		}
	}
	if len(cases) == 0 {
		return nil, fmt.Errorf("no cases selected")
	}
	rep := &report{Machine: machineInfo(), Commit: c.commit, Runs: c.runs, Streams: c.streams}
	type phase struct {
		suffix  string
		wan     *wanParams
		size    int64
		maxTime time.Duration
	}
	var phases []phase
	if c.loopback {
		phases = append(phases, phase{"", nil, c.size, c.maxTime})
		rep.SizeBytes = c.size
	}
	if c.wanOn {
		w := c.wan
		phases = append(phases, phase{"@wan", &w, c.wanSize, c.wanMax})
		rep.WAN = &wanReport{DelayMs: w.delay.Seconds() * 1e3, RateMbit: w.rate * 8 / 1e6, QueueBytes: w.queue, SizeBytes: c.wanSize}
	}
	for _, ph := range phases {
		e, err := newEnv(ph.wan)
		if err != nil {
			return nil, err
		}
		got := map[string]*samples{}
		for r := 1; r <= c.runs; r++ {
			for _, bc := range cases {
				name := bc.name + ph.suffix
				s := got[name]
				if s == nil {
					s = &samples{}
					got[name] = s
				}
				o := measureOpts{streams: 1, size: ph.size, maxTime: ph.maxTime, pingEvery: c.ping}
				res, err := measure(ctx, e, bc, o)
				if err != nil {
					rep.Failures++
					fmt.Fprintf(os.Stderr, "run %d %s: FAILED: %v\n", r, name, err)
				} else {
					res.run = r
					s.one = append(s.one, res)
					fmt.Fprintf(os.Stderr, "run %d %-20s 1 stream:  %7.1f MB/s  %.2f CPU-s/GiB  %7.1f MB alloc/GiB  ping p50 %s p99 %s\n",
						r, name, res.mbps, res.cpuPerGiB, res.allocPerGiB, usStr(res.p50), usStr(res.p99))
				}
				if c.streams > 1 {
					o = measureOpts{streams: c.streams, size: ph.size, maxTime: ph.maxTime}
					res, err = measure(ctx, e, bc, o)
					if err != nil {
						rep.Failures++
						fmt.Fprintf(os.Stderr, "run %d %s: %d streams FAILED: %v\n", r, name, c.streams, err)
					} else {
						res.run = r
						s.many = append(s.many, res)
						fmt.Fprintf(os.Stderr, "run %d %-20s %d streams: %7.1f MB/s  slowest %.2f of fair share\n",
							r, name, c.streams, res.mbps, res.share)
					}
				}
			}
		}
		for _, bc := range cases {
			if s := got[bc.name+ph.suffix]; s != nil {
				rep.Cases = append(rep.Cases, summarize(bc.name+ph.suffix, s))
			}
		}
		if ref := got["raw-tls"+ph.suffix]; ref != nil {
			for i := range rep.Cases {
				if c := &rep.Cases[i]; strings.HasSuffix(c.Name, ph.suffix) && got[c.Name] != nil {
					c.addPaired(got[c.Name], ref)
				}
			}
		}
	}
	rep.addRatios()
	return rep, nil
}

func usStr(us float64) string {
	if math.IsNaN(us) {
		return "n/a"
	}
	return strconv.FormatFloat(us, 'f', 0, 64) + "µs"
}

// stat is the median, min and max of one metric over the runs.
type stat struct{ med, lo, hi float64 }

func statOf(rs []result, f func(result) float64) (stat, bool) {
	var v []float64
	for _, r := range rs {
		if x := f(r); !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return stat{}, false
	}
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return stat{med, v[0], v[len(v)-1]}, true
}
