// Command perfreport runs pglock's performance benchmarks (internal/bench)
// and prints every figure as one Markdown table: each row gives the figure,
// its measured value and, where the project sets one, its target and
// whether it was met. Above the table it prints the machine, the Go and
// PostgreSQL versions, the set-up docs/performance.md states with its
// figures. Run it from the module root:
//
//	go run ./internal/cmd/perfreport
//
// Each benchmark runs in its own `go test -run '^$' -bench ... -benchtime
// ...` invocation, with its own throwaway PostgreSQL; the commands are
// printed before the table. With -soak it also runs the 60 s soaks of the
// lock table's cost on the server (BenchmarkSoak, BenchmarkSoakManyProcesses,
// with PGLOCK_SOAK=1), which take several minutes more.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"cirello.io/pglock/internal/pgserver"
)

// config is what the flags select.
type config struct {
	handoffs, takeovers, pairs int
	verbose, soak              bool
}

// run is one benchmark invocation.
type run struct {
	bench, benchtime string
	env              []string // set for this run, before the go command
}

// row prints one row of the table; met is nil where no target is set.
type rowFunc func(name, value, target string, met *bool)

func main() {
	var cfg config
	flag.IntVar(&cfg.handoffs, "handoffs", 200, "handoffs measured by BenchmarkHandoff")
	flag.IntVar(&cfg.takeovers, "takeovers", 20, "takeovers measured by BenchmarkCrashTakeover")
	flag.IntVar(&cfg.pairs, "pairs", 3000, "acquire+release pairs per side and goroutine count in BenchmarkThroughput")
	flag.BoolVar(&cfg.verbose, "v", false, "print the raw benchmark output")
	flag.BoolVar(&cfg.soak, "soak", false, "also run the 60 s soaks, BenchmarkSoak and BenchmarkSoakManyProcesses (several minutes more)")
	flag.Parse()

	results := map[string]map[string]float64{}
	for _, r := range cfg.runs() {
		out, err := r.exec(cfg.verbose)
		if err != nil {
			fmt.Fprintf(os.Stderr, "perfreport: %v\n", err)
			os.Exit(1)
		}
		parse(out, results)
	}
	fmt.Printf("Machine: %s, %d cores (nproc), %s; PostgreSQL %s on loopback\n\n",
		cpuModel(), runtime.NumCPU(), runtime.Version(), pgVersion())
	fmt.Println("| Figure | Measured | Target | Met |")
	fmt.Println("|---|---|---|---|")
	row := func(name, value, target string, met *bool) {
		m := ""
		if met != nil {
			m = map[bool]string{true: "yes", false: "**no**"}[*met]
		}
		fmt.Printf("| %s | %s | %s | %s |\n", name, value, target, m)
	}
	handoffRows(results, cfg, row)
	throughputRows(results, row)
	if cfg.soak {
		soakRows(results, row)
	}
}

// runs are the benchmark invocations cfg selects.
func (cfg config) runs() []run {
	runs := []run{
		{"^BenchmarkHandoff$", fmt.Sprintf("%dx", cfg.handoffs), nil},
		{"^BenchmarkCrashTakeover$", fmt.Sprintf("%dx", cfg.takeovers), nil},
		{"^BenchmarkThroughput$", fmt.Sprintf("%dx", cfg.pairs), nil},
		{"^BenchmarkContention$", "1x", nil},
	}
	if cfg.soak {
		runs = append(runs,
			run{"^BenchmarkSoak$", "1x", []string{"PGLOCK_SOAK=1"}},
			run{"^BenchmarkSoakManyProcesses$", "1x", []string{"PGLOCK_SOAK=1"}})
	}
	return runs
}

// exec runs r with the go command, printing the command first, and returns
// its output (printed too when verbose or when it fails).
func (r run) exec(verbose bool) ([]byte, error) {
	args := []string{"test", "-count=1", "-run", "^$", "-bench", r.bench, "-benchtime", r.benchtime, "./internal/bench"}
	if r.env != nil {
		args = append(args[:2], append([]string{"-timeout", "30m"}, args[2:]...)...) // the soaks
	}
	fmt.Fprintf(os.Stderr, "$ %sgo %s\n", strings.Join(append(r.env, ""), " "), strings.Join(quoteArgs(args), " "))
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), r.env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if verbose || err != nil {
		os.Stderr.Write(out.Bytes())
	}
	return out.Bytes(), err
}

// met is a row's verdict.
func met(v bool) *bool { return &v }

// handoffRows prints the rows of the handoff and takeover benchmarks.
func handoffRows(results map[string]map[string]float64, cfg config, row rowFunc) {
	h := results["BenchmarkHandoff/clients=2"]
	row(fmt.Sprintf("Handoff after release to a waiter of another Client, default 20 s lease (%d handoffs): p50", cfg.handoffs), ms(h["p50-ms"]), "", nil)
	row("  p99", ms(h["p99-ms"]), "≤ 10 ms", met(h["p99-ms"] <= 10))
	row("  max", ms(h["max-ms"]), "≤ 50 ms", met(h["max-ms"] <= 50))
	row("  woken by the notification", fmt.Sprintf("%.0f%%", 100*h["notes/op"]), "", nil)
	h1 := results["BenchmarkHandoff/clients=1"]
	row("Handoff to a waiter of the same Client: p50 / p99 / max",
		fmt.Sprintf("%s / %s / %s", ms(h1["p50-ms"]), ms(h1["p99-ms"]), ms(h1["max-ms"])), "", nil)
	c := results["BenchmarkCrashTakeover"]
	row(fmt.Sprintf("Crash takeover after the waiter first saw the RVN (%d takeovers, 500 ms lease): min–max", cfg.takeovers),
		fmt.Sprintf("%.3f–%.3f leases", c["seen-min-leases"], c["seen-max-leases"]), "1.00–1.25 leases",
		met(c["seen-min-leases"] >= 1 && c["seen-max-leases"] <= 1.25))
	row("Crash takeover after the holder's last heartbeat began: min–max",
		fmt.Sprintf("%.3f–%.3f leases", c["beat-min-leases"], c["beat-max-leases"]), "≥ 1.00 leases", met(c["beat-min-leases"] >= 1))
}

// throughputRows prints the rows of the throughput and contention
// benchmarks.
func throughputRows(results map[string]map[string]float64, row rowFunc) {
	for _, g := range []string{"1", "8", "64"} {
		t := results["BenchmarkThroughput/goroutines="+g]
		row(fmt.Sprintf("Uncontended acquire+release, %s goroutine(s): library / raw SQL", g),
			fmt.Sprintf("%.0f / %.0f ops/s", t["lib-ops/s"], t["raw-ops/s"]), "", nil)
		row(fmt.Sprintf("  ratio to raw SQL, %s goroutine(s)", g), fmt.Sprintf("%.2f", t["ratio"]), "≥ 0.80", met(t["ratio"] >= 0.8))
	}
	k := results["BenchmarkContention"]
	row("100 goroutines on one name, 10 s: acquisitions", fmt.Sprintf("%.0f", k["acquisitions"]), "", nil)
	row("  fewest acquisitions of one goroutine", fmt.Sprintf("%.0f", k["fewest-per-goroutine"]), "≥ 1, no error", met(k["fewest-per-goroutine"] >= 1))
	row("  longest wait", ms(k["max-wait-ms"]), "reported", nil)
}

// soakRows prints the rows of the soak benchmarks.
func soakRows(results map[string]map[string]float64, row rowFunc) {
	for _, t := range []struct{ name, title string }{
		{"CreateTable", "CreateTable's table (fillfactor 50)"},
		{"original", "the original's table (fillfactor 100)"},
	} {
		s := results["BenchmarkSoak/table="+t.name]
		// Targets for CreateTable's table; the original's is the comparison.
		target := func(text string, ok bool) (string, *bool) {
			if t.name != "CreateTable" {
				return "", nil
			}
			return text, met(ok)
		}
		tg, m := target("≥ 99%", s["hot-%"] >= 99)
		row(fmt.Sprintf("Soak, %.0f locks held %.0f s, %.0f ms heartbeat, %s: HOT share of the updates",
			s["locks"], s["held-s"], s["heartbeat-ms"], t.title), fmt.Sprintf("%.2f%%", s["hot-%"]), tg, m)
		tg, m = target("< 1.5x", s["table-x"] < 1.5)
		row("  table growth over the hold", fmt.Sprintf("%.2fx", s["table-x"]), tg, m)
		row("  index growth over the hold", fmt.Sprintf("%.2fx", s["index-x"]), "", nil)
		row("  statements/s served; heartbeats/s", fmt.Sprintf("%.1f; %.0f", s["stmts/s"], s["beats/s"]), "", nil)
		row("  locks lost", fmt.Sprintf("%.0f", s["lost"]), "0", met(s["lost"] == 0))
	}
	s := results["BenchmarkSoakManyProcesses"]
	row(fmt.Sprintf("Soak, %.0f locks across %.0f processes held %.0f s, %.0f ms heartbeat: locks lost",
		s["locks"], s["procs"], s["held-s"], s["heartbeat-ms"]), fmt.Sprintf("%.0f", s["lost"]), "0", met(s["lost"] == 0))
	row("  statements/s served; heartbeats/s", fmt.Sprintf("%.1f; %.0f", s["stmts/s"], s["beats/s"]), "reported", nil)
	row("  HOT share; table growth", fmt.Sprintf("%.2f%%; %.2fx", s["hot-%"], s["table-x"]), "", nil)
}

func ms(v float64) string { return fmt.Sprintf("%.2f ms", v) }

// parse reads benchmark result lines: name, iterations, then value-unit pairs.
func parse(out []byte, results map[string]map[string]float64) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i] // drop the GOMAXPROCS suffix
			}
		}
		m := map[string]float64{}
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				m[f[i+1]] = v
			}
		}
		results[name] = m
	}
}

func quoteArgs(args []string) []string {
	q := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, "^$ *") {
			a = "'" + a + "'"
		}
		q[i] = a
	}
	return q
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func pgVersion() string {
	if dsn := os.Getenv(pgserver.EnvDSN); dsn != "" {
		return "(external, " + pgserver.EnvDSN + ")"
	}
	dir, err := pgserver.FindBinDir()
	if err != nil {
		return "?"
	}
	out, err := exec.Command(filepath.Join(dir, "postgres"), "--version").Output()
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(out))
	if len(f) >= 3 {
		return f[2]
	}
	return strings.TrimSpace(string(out))
}
