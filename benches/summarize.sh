#!/usr/bin/env bash
# benches/summarize.sh RESULTS - the table of benches/load.sh: every scenario as a ratio to the
# baseline of the same run. "accepted/s" counts 202s only (the sustained no-loss rate for
# reject lanes); "CPU µs/event" is the SUT's CPU time per accepted event, every target included.
set -euo pipefail
awk '
/^RESULT / {
  delete f
  for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = substr($i, length(kv[1]) + 2) }
  l = f["label"]; order[++n] = l
  ok[l] = (f["sent"] - f["bad_status"]) / f["duration_s"]
  p99[l] = f["p99_ms"]; cpu[l] = f["sut_cpu_pct"]; rss[l] = f["rss_mb"]
  us[l] = ok[l] ? f["sut_cpu_pct"] / 100 * 1e6 / ok[l] : 0
  refused[l] = f["bad_status"] / f["duration_s"]
  lost[l] = f["missing"]; foreign[l] = f["foreign_cpu_pct"]
}
/^(MEMORY|STARTUP|BINARY) / { extra[++m] = $0 }
END {
  b = "baseline"
  print "| scenario | accepted/s | x baseline | 503/s | p99 ms | p99 x baseline | CPU µs/event | x baseline | missing | RSS MB | foreign CPU % |"
  print "|---|---|---|---|---|---|---|---|---|---|---|"
  for (i = 1; i <= n; i++) {
    l = order[i]
    printf "| %s | %.0f | %.2f | %.0f | %.3f | %.2f | %.2f | %.2f | %s | %s | %s |\n", l, ok[l], ok[b] ? ok[l] / ok[b] : 0,
      refused[l], p99[l], p99[b] ? p99[l] / p99[b] : 0, us[l], us[b] ? us[l] / us[b] : 0, lost[l], rss[l], foreign[l]
  }
  for (i = 1; i <= m; i++) print "\n" extra[i]
}' "$1"
