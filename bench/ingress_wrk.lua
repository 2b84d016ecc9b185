-- wrk script for bench/ingress.py: replays pre-built signed Shopify webhooks and referral clicks.
--
-- Arguments (after `--`): RECORDS_FILE OUT_DIR PHASE CLICK_SHARE
--   RECORDS_FILE  records written by bench/ingress.py: a line "o|c PREFIX_LEN SUFFIX_LEN", then
--                 PREFIX and SUFFIX. For an order the request is PREFIX .. event id .. SUFFIX
--                 (the prefix ends with "X-Shopify-Event-Id: ", the suffix holds the signed body);
--                 a click is PREFIX .. SUFFIX as is.
--   OUT_DIR       where each thread writes the ids the ingress acknowledged ("o <event id>" for a
--                 200 accepted webhook, "c <click id>" for a 302 redirect), one per line.
--   PHASE         namespaces the event ids (warm-up and measured phases never collide).
--   CLICK_SHARE   fraction of requests that are clicks (0..1).
-- Every request gets a unique event id: bench-<phase>-<thread>-<counter>.

local orders, clicks = {}, {}
local n_orders, n_clicks = 0, 0
local share, acc = 0.0, 0.0
local sent_orders, sent_clicks = 0, 0
local id_prefix = ""
local out = nil
counts = {}
sent = {}

local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

local function load(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  local pos = 1
  local size = #data
  while pos <= size do
    local nl = string.find(data, "\n", pos, true)
    local kind, a, b = string.match(string.sub(data, pos, nl - 1), "^(%a) (%d+) (%d+)$")
    a, b = tonumber(a), tonumber(b)
    local prefix = string.sub(data, nl + 1, nl + a)
    local suffix = string.sub(data, nl + a + 1, nl + a + b)
    if kind == "o" then
      n_orders = n_orders + 1
      orders[n_orders] = { prefix, suffix }
    else
      n_clicks = n_clicks + 1
      clicks[n_clicks] = prefix .. suffix
    end
    pos = nl + a + b + 1
  end
end

function init(args)
  load(args[1])
  share = tonumber(args[4]) or 0.0
  id_prefix = "bench-" .. args[3] .. "-" .. tid .. "-"
  out = assert(io.open(args[2] .. "/acked-" .. args[3] .. "-" .. tid .. ".txt", "w"))
  out:setvbuf("full", 1048576)
end

function request()
  acc = acc + share
  if acc >= 1.0 and n_clicks > 0 then
    acc = acc - 1.0
    sent_clicks = sent_clicks + 1
    sent.clicks = sent_clicks
    return clicks[(sent_clicks % n_clicks) + 1]
  end
  sent_orders = sent_orders + 1
  sent.orders = sent_orders
  local r = orders[(sent_orders % n_orders) + 1]
  return r[1] .. id_prefix .. sent_orders .. r[2]
end

function response(status, headers, body)
  local key
  if status == 200 then
    local st, id = string.match(body, '"status":"([%a_]+)","event_id":"([^"]*)"')
    if st == "accepted" then
      out:write("o ", id, "\n")
    end
    key = "200 " .. (st or "?")
  elseif status == 302 then
    local loc = headers["location"] or headers["Location"]
    local id = loc and string.match(loc, "rsclid=([%w_%-]+)")
    if id then
      out:write("c ", id, "\n")
    end
    key = "302 redirect"
  else
    key = tostring(status) .. " " .. (string.match(body or "", '"code":"([%w_]+)"') or "?")
  end
  counts[key] = (counts[key] or 0) + 1
  if status ~= 200 and status ~= 302 then
    out:flush()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH|duration_us|%d\n", summary.duration))
  io.write(string.format("BENCH|requests|%d\n", summary.requests))
  io.write(string.format("BENCH|bytes|%d\n", summary.bytes))
  io.write(string.format("BENCH|errors|%d|%d|%d|%d|%d\n",
    e.connect, e.read, e.write, e.status, e.timeout))
  for _, p in ipairs({ 50, 75, 90, 95, 99, 99.9 }) do
    io.write(string.format("BENCH|latency_us|%g|%d\n", p, latency:percentile(p)))
  end
  io.write(string.format("BENCH|latency_mean_us|%f\n", latency.mean))
  io.write(string.format("BENCH|latency_max_us|%d\n", latency.max))
  local merged, sent_total = {}, { orders = 0, clicks = 0 }
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do
      merged[k] = (merged[k] or 0) + v
    end
    for k, v in pairs(t:get("sent")) do
      sent_total[k] = sent_total[k] + v
    end
  end
  for k, v in pairs(merged) do
    io.write(string.format("BENCH|status|%s|%d\n", k, v))
  end
  for k, v in pairs(sent_total) do
    io.write(string.format("BENCH|sent|%s|%d\n", k, v))
  end
end
