-- wrk: GET /v1/authz over many keys, round-robin, with the engine's three headers.
--
--   wrk -t2 -c64 -d20s --latency -s loadtest/authz_keys.lua http://127.0.0.1:PORT -- KEYS_FILE [THREADS]
--
-- KEYS_FILE (one key a line) comes from the first script argument or, failing that, from the
-- KEYS_FILE environment variable. THREADS (default 2) should match -t: thread n starts at
-- key n * count / THREADS so the threads do not walk the keys in step.
--
-- Every request is built once, in init(), so request() only returns a prebuilt string: wrk
-- shares the 2 CPUs with the server, and every cycle it spends is one the server loses.
-- For the same reason there is no response() callback by default (wrk parses nothing for
-- Lua when none is defined): done() reports wrk's own count of statuses above 399
-- (errors.status) as "non200". Set WRK_COUNT_STATUS=1 to define response() and count every
-- status other than 200 exactly, at some cost in throughput.
--
-- done() prints one line, "wrk-result {json}", that loadtest/run parses: requests, duration,
-- requests per second, latency percentiles (ms), error counts.
--
-- The same script serves the bare baseline: it ignores the key and the X-Forwarded-* headers,
-- so both servers parse identical requests.

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

local requests = {}
local count = 0
local index = 0
non200 = 0
responses = 0

local function read_keys(path)
   local file, err = io.open(path, "r")
   if not file then
      error("authz_keys.lua: cannot open keys file " .. tostring(path) .. ": " .. tostring(err))
   end
   local keys = {}
   for line in file:lines() do
      local key = line:match("^%s*(.-)%s*$")
      if key ~= "" then
         keys[#keys + 1] = key
      end
   end
   file:close()
   if #keys == 0 then
      error("authz_keys.lua: no keys in " .. path)
   end
   return keys
end

function init(args)
   local path = args[1] or os.getenv("KEYS_FILE")
   if not path or path == "" then
      error("authz_keys.lua: pass the keys file as a script argument (-- FILE) or in KEYS_FILE")
   end
   local nthreads = tonumber(args[2] or "2") or 2
   if nthreads < 1 then nthreads = 1 end
   local host = wrk.headers["Host"] or (wrk.host .. ":" .. tostring(wrk.port))
   local keys = read_keys(path)
   for i, key in ipairs(keys) do
      requests[i] = "GET /v1/authz HTTP/1.1\r\n"
         .. "Host: " .. host .. "\r\n"
         .. "Authorization: Bearer " .. key .. "\r\n"
         .. "X-Forwarded-Method: GET\r\n"
         .. "X-Forwarded-Uri: /v1/checks\r\n"
         .. "\r\n"
   end
   count = #requests
   -- index is 0-based; request() uses index + 1.
   index = math.floor((id or 0) * count / nthreads) % count
end

function request()
   local r = requests[index + 1]
   index = index + 1
   if index == count then index = 0 end
   return r
end

if os.getenv("WRK_COUNT_STATUS") == "1" then
   function response(status, headers, body)
      responses = responses + 1
      if status ~= 200 then
         non200 = non200 + 1
      end
   end
end

function done(summary, latency, requests)
   local counted = os.getenv("WRK_COUNT_STATUS") == "1"
   local non200_total, responses_total = 0, 0
   if counted then
      for _, thread in ipairs(threads) do
         non200_total = non200_total + (tonumber(thread:get("non200")) or 0)
         responses_total = responses_total + (tonumber(thread:get("responses")) or 0)
      end
   end
   local e = summary.errors
   local seconds = summary.duration / 1e6
   local function ms(us) return string.format("%.3f", us / 1000) end
   io.write(string.format(
      'wrk-result {"requests": %d, "duration_s": %.3f, "rps": %.1f, ' ..
      '"latency_ms": {"mean": %s, "p50": %s, "p90": %s, "p99": %s, "max": %s}, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d, "status_over_399": %d}, ' ..
      '"counted_statuses": %s, "non200": %d, "responses_counted": %d}\n',
      summary.requests, seconds, seconds > 0 and summary.requests / seconds or 0,
      ms(latency.mean), ms(latency:percentile(50)), ms(latency:percentile(90)),
      ms(latency:percentile(99)), ms(latency.max),
      e.connect, e.read, e.write, e.timeout, e.status,
      counted and "true" or "false",
      counted and non200_total or e.status, responses_total))
end
