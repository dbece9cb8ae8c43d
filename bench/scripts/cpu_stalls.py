"""How often the machine takes a core away from a busy thread.

Spins on the clock for SECONDS and reports every gap longer than 0.3 ms: time the
thread was not running although it never blocked (host steal, kernel threads,
interrupts). Run one per core, with the cores otherwise idle:

    taskset -c 0 python3 bench/scripts/cpu_stalls.py 10 & taskset -c 1 python3 bench/scripts/cpu_stalls.py 10; wait

A latency tail at the p99 cannot be shorter than these stalls once they touch more
than 1 % of the calls; see BENCHMARKS.md.
"""
import time, sys
end = time.perf_counter() + float(sys.argv[1])
last = time.perf_counter(); gaps = []
while last < end:
    now = time.perf_counter()
    d = now - last
    if d > 0.0003: gaps.append(d)
    last = now
gaps.sort()
tot = sum(gaps)
print(f"gaps>0.3ms: {len(gaps)}  total {tot*1000:.1f} ms ({tot/float(sys.argv[1])*100:.2f}% of time)  max {max(gaps)*1000 if gaps else 0:.2f} ms  >1ms: {sum(1 for g in gaps if g>0.001)}  >2ms: {sum(1 for g in gaps if g>0.002)}  >5ms: {sum(1 for g in gaps if g>0.005)}")
