-- wrk script for bench/web.py: authenticated deposit form POSTs, one random account of the
-- list per request, and a fresh command id (UUID v4) per request on the command side.
--
--   wrk -s bench/wrk_post.lua URL -- MODE COOKIE CSRF ID1,ID2,...
--
-- MODE is "command" (POST /accounts/<id>/deposit) or "baseline" (POST /bench/deposit-in-place/<id>).
-- done() prints one line "WRK_RESULT {json}" with the counts per HTTP status and the latency
-- percentiles, so that the caller does not have to parse wrk's human output.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

local function uuid4()
  return (string.gsub("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx", "[xy]", function(c)
    return string.format("%x", c == "x" and math.random(0, 15) or math.random(8, 11))
  end))
end

local mode, ids, headers

function init(args)
  mode = args[1]
  headers = {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Cookie"] = args[2],
    ["X-CSRFToken"] = args[3],
    ["HX-Request"] = "true",
  }
  ids = {}
  for id in string.gmatch(args[4], "[^,]+") do
    ids[#ids + 1] = id
  end
  -- Threads start within the same second: the thread id keeps their command ids apart.
  math.randomseed(os.time() * 1000 + thread_id)
  statuses = {} -- global: done() reads it with thread:get
end

function request()
  local id = ids[math.random(#ids)]
  -- The same form on both sides (the baseline view checks it with the same MoveMoneyForm).
  local body = "deposit-amount=1.00&deposit-command_id=" .. uuid4()
  if mode == "command" then
    return wrk.format("POST", "/accounts/" .. id .. "/deposit", headers, body)
  end
  return wrk.format("POST", "/bench/deposit-in-place/" .. id, headers, body)
end

function response(status, _, _)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, _)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses") or {}) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    parts[#parts + 1] = string.format('"%d": %d', status, n)
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "mean_us": %.1f, "p50_us": %d, "p90_us": %d, '
      .. '"p99_us": %d, "max_us": %d, "socket_errors": {"connect": %d, "read": %d, "write": %d, '
      .. '"timeout": %d}, "statuses": {%s}}\n',
    summary.requests, summary.duration, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.timeout, table.concat(parts, ", ")
  ))
end
