#!/bin/bash
# What a training node sends when no round is due: bench/swarm.py runs 2 nodes (root: each in its
# own network namespace) with H so large that no round comes; after 20 s of training this reads
# node n0's TCP connections (`ss -ti` in its namespace) twice, 60 s apart, and prints the bytes
# per second it sent on each (its p2pd: DHT and averager traffic) and in total.
# Usage (root): bash bench/dht_chatter.sh OUTDIR [DATA]   (OUTDIR is replaced and keeps the run's
# logs; DATA: prepared data to reuse, as bench/swarm.py --data)
set -u
out=$1
data=(${2:+--data "$2"})
rm -rf "$out" && mkdir -p "$out"
cd "$(dirname "$0")/.."
setsid .venv/bin/python bench/swarm.py --nodes 2 --late 0 --rounds 1 --inner-steps 100000 \
    --json --keep "$out/run" --timeout 240 "${data[@]}" > "$out/out.json" 2> "$out/err.log" &
bench=$!
for _ in $(seq 300); do
    grep -q "starting at round" "$out/run/node-n0.log" 2>/dev/null &&
        grep -q "starting at round" "$out/run/node-n1.log" 2>/dev/null && break
    sleep 2
done
sleep 20
ns=$(ip netns list | awk '{print $1}' | grep "g5b${bench}n0" | head -1)
snap() { ip netns exec "$ns" ss -tinH state established |
    grep -o '[0-9.]*:[0-9]* *[0-9.]*:[0-9]*\|bytes_sent:[0-9]*' | paste - - | sort; }
snap > "$out/s0"; sleep 60; snap > "$out/s1"
join <(awk '{print $1"_"$2, $3}' "$out/s0") <(awk '{print $1"_"$2, $3}' "$out/s1") |
    awk '{split($2,a,":"); split($3,b,":"); d=(b[2]-a[2])/60/1024; t+=d;
          printf "%s %.1f KiB/s\n", $1, d} END {printf "total %.1f KiB/s\n", t}'
kill -INT "$bench"  # the bench stops its nodes and removes its namespaces
wait "$bench"
