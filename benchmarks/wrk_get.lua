-- wrk script for the WSGI benchmark: GET the keys the benchmark stored, in turn,
-- and print one JSON line of results when done.
local keys = tonumber(os.getenv("BENCH_KEYS") or "500")
local prefix = os.getenv("BENCH_PREFIX") or "wsgi-"
local n = 0

request = function()
  n = n + 1
  return wrk.format("GET", "/" .. prefix .. (n % keys))
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
