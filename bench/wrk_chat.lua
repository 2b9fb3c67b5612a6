-- wrk script for bench/load.py: one fixed non-stream chat completion per request, and a
-- single machine-readable summary line ("WRK_RESULT {...}") when the run ends.
-- Read from the environment (load.py sets them):
--   BENCH_KEY      bearer token
--   BENCH_BODY     the JSON request body
--   BENCH_HEADERS  extra request headers, "Name: value" lines
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "sk-bench")
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
  local k, v = line:match("^%s*([^:]+):%s*(.-)%s*$")
  if k then wrk.headers[k] = v end
end

function done(summary, latency, requests)
  local err = summary.errors
  local pct = function(p) return latency:percentile(p) end
  io.write("WRK_RESULT {")
  io.write(string.format('"requests":%d,"duration_us":%d,', summary.requests, summary.duration))
  io.write(string.format('"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,',
    err.connect, err.read, err.write, err.status, err.timeout))
  io.write(string.format('"mean_us":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d',
    latency.mean, pct(50), pct(90), pct(99), latency.max))
  io.write("}\n")
end
