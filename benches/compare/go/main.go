// The Go side of kvant's comparison benchmarks (benches/compare/go_peer.rs
// builds and runs it when a `go` toolchain is installed). Each workload
// prints `key value` lines; GOMAXPROCS is set by the caller.
package main

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"time"
)

// burn is the same LCG mixer as util::burn on the Rust side.
//
//go:noinline
func burn(iters uint64) uint64 {
	x := uint64(0x123456789abcdef0)
	for i := uint64(0); i < iters; i++ {
		x = x*6364136223846793005 + 1442695040888963407
		x ^= x >> 29
	}
	return x
}

var sink uint64

func arg(i int) uint64 {
	v, err := strconv.ParseUint(os.Args[i], 10, 64)
	if err != nil {
		panic(err)
	}
	return v
}

// spawn N goroutines in batches of 10,000, each joined before the next.
func spawn(n uint64) {
	start := time.Now()
	for done := uint64(0); done < n; {
		batch := n - done
		if batch > 10000 {
			batch = 10000
		}
		var wg sync.WaitGroup
		wg.Add(int(batch))
		for i := uint64(0); i < batch; i++ {
			go func() { wg.Done() }()
		}
		wg.Wait()
		done += batch
	}
	fmt.Printf("ns_per_task %f\n", float64(time.Since(start).Nanoseconds())/float64(n))
}

// yield: two goroutines taking turns with runtime.Gosched (GOMAXPROCS=1).
func yield(n uint64) {
	var wg sync.WaitGroup
	wg.Add(2)
	start := time.Now()
	for g := 0; g < 2; g++ {
		go func() {
			for i := uint64(0); i < n/2; i++ {
				runtime.Gosched()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	fmt.Printf("ns_per_yield %f\n", float64(time.Since(start).Nanoseconds())/float64(n))
}

// sleeper: one goroutine sleeps 1 ms in a loop beside 4 hogs (GOMAXPROCS=1).
func sleeper(runMs, step uint64) {
	end := time.Now().Add(time.Duration(runMs) * time.Millisecond)
	var wg sync.WaitGroup
	for h := 0; h < 4; h++ {
		wg.Add(1)
		go func() {
			x := uint64(0)
			for time.Now().Before(end) {
				x ^= burn(step)
			}
			sink ^= x
			wg.Done()
		}()
	}
	var late []time.Duration
	for time.Now().Before(end) {
		t := time.Now()
		time.Sleep(time.Millisecond)
		d := time.Since(t) - time.Millisecond
		if d < 0 {
			d = 0
		}
		late = append(late, d)
	}
	wg.Wait()
	sort.Slice(late, func(i, j int) bool { return late[i] < late[j] })
	p := func(q float64) time.Duration { return late[int(float64(len(late)-1)*q)] }
	fmt.Printf("wakeups %d\np50_us %f\np99_us %f\nmax_us %f\n", len(late),
		float64(p(0.5).Nanoseconds())/1e3, float64(p(0.99).Nanoseconds())/1e3,
		float64(late[len(late)-1].Nanoseconds())/1e3)
}

// hogs: 4 goroutines each burning `iters` rounds (preemption on, as always in Go).
func hogs(iters uint64) {
	start := time.Now()
	var wg sync.WaitGroup
	for h := 0; h < 4; h++ {
		wg.Add(1)
		go func() {
			sink ^= burn(iters)
			wg.Done()
		}()
	}
	wg.Wait()
	fmt.Printf("wall_ms %f\n", float64(time.Since(start).Nanoseconds())/1e6)
}

func main() {
	switch os.Args[1] {
	case "spawn":
		spawn(arg(2))
	case "yield":
		yield(arg(2))
	case "sleeper":
		sleeper(arg(2), arg(3))
	case "hogs":
		hogs(arg(2))
	default:
		panic("unknown workload " + os.Args[1])
	}
}
