#!/bin/bash
# Run from the repository root on the device: CPU=2 bash bench/results/2026-11-25-h200-overhead/launch_probe.sh build/gpu/interpose/libfikit.so 400000
# Per-launch host cost, real driver and fake driver, variants. Throwaway probe.
L=${1:-$PWD/build/gpu/interpose/libfikit.so}
N=${2:-400000}
gcc -O2 -o /tmp/ll bench/launch_loop.c -ldl || exit 1
make -s -C tests/fakecuda OUT=/tmp/fakecuda >/dev/null || exit 1
echo "clocksource: $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
cat > /tmp/clk.c <<'EOC'
#include <stdio.h>
#include <time.h>
int main(void){struct timespec a,b,t;clock_gettime(CLOCK_MONOTONIC,&a);for(int i=0;i<1000000;i++)clock_gettime(CLOCK_MONOTONIC,&t);clock_gettime(CLOCK_MONOTONIC,&b);printf("clock_gettime %.1f ns\n",((double)(b.tv_sec-a.tv_sec)*1e9+(double)(b.tv_nsec-a.tv_nsec))/1e6);return 0;}
EOC
gcc -O2 -o /tmp/clk /tmp/clk.c && /tmp/clk
run() { # driver variant
  local drv=$1 v=$2; local -a e=(env FIKIT_DOMAIN=/nonexistent/x FIKIT_SOCKET=/nonexistent/x FIKIT_PRIO=high)
  [ "$drv" = fake ] && e+=(LD_LIBRARY_PATH=/tmp/fakecuda FAKECUDA_DURATIONS='*=0')
  case $v in
    none) ;;
    pass) e+=(LD_PRELOAD=$L FIKIT_PASSTHROUGH=1);;
    nosample) e+=(LD_PRELOAD=$L FIKIT_SAMPLE=1000000);;
    sample16) e+=(LD_PRELOAD=$L);;
    nogate) e+=(LD_PRELOAD=$L FIKIT_GATE=0);;
  esac
  printf '%s %-9s ' "$drv" "$v"; "${e[@]}" taskset -c ${CPU:-2} /tmp/ll $N 2>&1 | tail -1
}
for rep in 1 2 3; do
  for drv in real fake; do
    for v in none pass nosample sample16 nogate; do run $drv $v; done
  done
done
