#!/usr/bin/env bash
# benches/summarize.sh RESULTS - the table of benches/load.sh: every scenario as a ratio to the
# baseline of the same run. With several rounds a figure is the median of the scenario's runs
# ("runs" says how many); "missing" and "foreign CPU %" are the worst run's. "accepted/s"
# counts 202s only (the sustained no-loss rate for reject lanes); "CPU µs/event" is the SUT's
# CPU time per accepted event, every target included. A second table puts each scenario that
# has a twin in the run (the same route but for one setting) as a ratio to it: the cost of
# that setting (authentication, signing, storage on disk). A third compares the balance
# scenarios' proxies (fanout, nginx, HAProxy): throughput, CPU per request, and the latency
# each adds at one request in flight.
set -euo pipefail
awk '
function median(list,    v, k, i, j, t) {
  k = split(list, v, " ")
  for (i = 2; i <= k; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
  return k % 2 ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
}
function worst(a, b) { return (a == "" || b + 0 > a + 0) ? b : a }
/^RESULT / {
  delete f
  for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = substr($i, length(kv[1]) + 2) }
  l = f["label"]
  if (!(l in runs)) order[++n] = l
  runs[l]++
  accepted = (f["sent"] - f["bad_status"]) / f["duration_s"]
  ok[l] = ok[l] " " accepted
  refused[l] = refused[l] " " f["bad_status"] / f["duration_s"]
  p99[l] = p99[l] " " f["p99_ms"]
  p50[l] = p50[l] " " f["p50_ms"]
  us[l] = us[l] " " (accepted ? f["sut_cpu_pct"] / 100 * 1e6 / accepted : 0)
  rss[l] = rss[l] " " f["rss_mb"]
  lost[l] = f["missing"] == "na" ? "na" : worst(lost[l], f["missing"])
  foreign[l] = worst(foreign[l], f["foreign_cpu_pct"])
}
/^(MEMORY|BACKLOG|STARTUP|REBUILD|BINARY) / { extra[++m] = $0 }
END {
  b = "baseline"
  for (i = 1; i <= n; i++) { l = order[i]; OK[l] = median(ok[l]); P99[l] = median(p99[l]); US[l] = median(us[l]) }
  print "| scenario | runs | accepted/s | x baseline | 503/s | p99 ms | p99 x baseline | CPU µs/event | x baseline | missing | RSS MB | foreign CPU % |"
  print "|---|---|---|---|---|---|---|---|---|---|---|---|"
  for (i = 1; i <= n; i++) {
    l = order[i]
    printf "| %s | %d | %.0f | %.2f | %.0f | %.3f | %.2f | %.2f | %.2f | %s | %s | %s |\n", l, runs[l], OK[l],
      OK[b] ? OK[l] / OK[b] : 0, median(refused[l]), P99[l], P99[b] ? P99[l] / P99[b] : 0, US[l],
      US[b] ? US[l] / US[b] : 0, lost[l], median(rss[l]), foreign[l]
  }
  split("auth-hmac=down auth-bearer=down ddown-always=down ddown-10ms=down ddown-never=down sign2=reject2 disk2=reject2 disk2-always=reject2 sign-batch2=batch2", pairs, " ")
  for (i in pairs) { split(pairs[i], kv, "="); twin[kv[1]] = kv[2] }
  header = "\n| scenario | twin | accepted/s x twin | CPU µs/event x twin | p99 x twin |\n|---|---|---|---|---|"
  for (i = 1; i <= n; i++) {
    l = order[i]; t = twin[l]
    if (t == "" || !(t in OK) || !OK[t]) continue
    if (header != "") { print header; header = "" }
    printf "| %s | %s | %.2f | %.2f | %.2f |\n", l, t, OK[l] / OK[t], US[t] ? US[l] / US[t] : 0, P99[t] ? P99[l] / P99[t] : 0
  }
  # Balance: each proxy saturated (-c64) and one request at a time (-c1), its latency added
  # to a sink answered directly (direct-c1).
  header = "\n| proxy | requests/s | x baseline | CPU µs/request | added p50 ms (c1) | added p99 ms (c1) |\n|---|---|---|---|---|---|"
  d = "direct-c1"
  split("balance2 nginx-balance2 haproxy-balance2", proxies, " ")
  for (i = 1; i <= 3; i++) {
    l = proxies[i]; c = l "-c1"
    if (!(l in OK) || !(c in OK) || !(d in OK)) continue
    if (header != "") { print header; header = "" }
    printf "| %s | %.0f | %.2f | %.2f | %.3f | %.3f |\n", l, OK[l], OK[b] ? OK[l] / OK[b] : 0, US[l],
      median(p50[c]) - median(p50[d]), P99[c] - P99[d]
  }
  for (i = 1; i <= m; i++) print "\n" extra[i]
}' "$1"
