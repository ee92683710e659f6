#!/usr/bin/env bash
# bench/boundary/profile.sh — ncu counters for chosen gemm_whole instances (harness "profile" mode).
# Arguments: triples "shape M instance" (shape 0 qkv, 1 o, 2 gate_up, 3 down; instance as the sweep names it).
set -uo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-/tmp/boundary_out}
mkdir -p "$OUT"
nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -I../../Sources/KilnKernels/cuda/common harness.cu -o /tmp/boundary 2> "$OUT/build.txt" || exit 1
metrics=gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,lts__t_sectors_srcunit_tex_op_read.sum,lts__t_sectors_srcunit_tex_op_read_lookup_hit.sum,l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum,l1tex__t_sectors_pipe_lsu_mem_global_op_ld_lookup_hit.sum,lts__throughput.avg.pct_of_peak_sustained_elapsed,l1tex__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__average_warp_latency_issue_stalled_long_scoreboard.ratio,smsp__average_warp_latency_issue_stalled_lg_throttle.ratio,smsp__average_warp_latency_issue_stalled_mio_throttle.ratio,smsp__average_warp_latency_issue_stalled_math_pipe_throttle.ratio,smsp__average_warp_latency_issue_stalled_barrier.ratio,smsp__average_warp_latency_issue_stalled_wait.ratio,smsp__issue_active.avg.pct_of_peak_sustained_active,lts__t_sectors_srcunit_tex_op_read_lookup_miss.sum
ncu --metrics $metrics --launch-count 100 /tmp/boundary profile "$@" > "$OUT/ncu.txt" 2>&1
grep -E "kiln_gemm|xs_k|gpu__time|dram__|lts__|l1tex__|sm__warps|smsp__" "$OUT/ncu.txt" | sed 's/  */ /g' | head -400
