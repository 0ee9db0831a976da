-- wrk script for `cargo xtask bench`: prints one line, `BENCH {json}`, with
-- what wrk's own report lacks (p99.9) in a form the task parses.
--
-- Nothing here runs per request: defining wrk's `request` or `response`
-- hooks (e.g. to stop after N responses) cost 40% of wrk's throughput on
-- these machines, which would make wrk the bottleneck. Runs are bounded by
-- time (-d) and connection count (-c) instead; see scripts/src/bench/wrk.rs.

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"non_2xx":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
