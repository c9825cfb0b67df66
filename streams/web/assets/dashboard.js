// retention-scorer dashboard: draws SVG line charts from /dashboard/series and reads
// /flow; looks customers up with /customers/{id}. Hand-written, no dependencies.
"use strict";
(function () {
  var SVGNS = "http://www.w3.org/2000/svg";
  var W = 400, H = 170, PAD_L = 44, PAD_R = 8, PAD_T = 8, PAD_B = 20;
  var COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];
  var token = null;
  var refreshMs = 2000;

  // token: from the URL fragment (#token=..., never sent to the server) or this tab's storage
  (function () {
    var m = /(?:^|[#&])token=([^&]+)/.exec(location.hash || "");
    if (m) {
      token = decodeURIComponent(m[1]);
      try { sessionStorage.setItem("retention-token", token); } catch (e) { /* private mode */ }
      history.replaceState(null, "", location.pathname + location.search);
    } else {
      try { token = sessionStorage.getItem("retention-token"); } catch (e) { token = null; }
    }
  })();

  function el(tag, attrs, text) {
    var n = document.createElement(tag);
    for (var k in attrs || {}) n.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }
  function svg(tag, attrs, text) {
    var n = document.createElementNS(SVGNS, tag);
    for (var k in attrs || {}) n.setAttribute(k, attrs[k]);
    if (text !== undefined) n.textContent = String(text);
    return n;
  }
  function fmt(v, digits) {
    if (v === null || v === undefined || isNaN(v)) return "–";
    if (v === 0) return "0";
    var a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
    if (digits !== undefined) return v.toFixed(digits);
    return a >= 100 ? v.toFixed(0) : a >= 1 ? v.toFixed(1) : v.toFixed(3);
  }
  function clock(t) { var d = new Date(t * 1000); return d.toTimeString().slice(0, 8); }

  function get(path) {
    var headers = {};
    if (token) headers["Authorization"] = "Bearer " + token;
    return fetch(path, { headers: headers, cache: "no-store" }).then(function (r) {
      if (r.status === 401) { document.getElementById("auth").hidden = false; throw new Error("unauthorized"); }
      return r.json().then(function (body) { return { status: r.status, body: body }; });
    });
  }

  // one line chart: series = [{name, values}] aligned with times
  function drawChart(fig, times, series, opts) {
    opts = opts || {};
    fig.textContent = "";
    fig.appendChild(el("figcaption", {}, fig.getAttribute("data-title")));
    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", role: "img" });
    fig.appendChild(root);
    var lo = Infinity, hi = -Infinity, t0 = Infinity, t1 = -Infinity, any = false;
    series.forEach(function (s) {
      s.values.forEach(function (v, i) {
        if (v === null || v === undefined) return;
        any = true; lo = Math.min(lo, v); hi = Math.max(hi, v);
        t0 = Math.min(t0, times[i]); t1 = Math.max(t1, times[i]);
      });
    });
    root.appendChild(svg("line", { "class": "axis", x1: PAD_L, y1: H - PAD_B, x2: W - PAD_R, y2: H - PAD_B }));
    root.appendChild(svg("line", { "class": "axis", x1: PAD_L, y1: PAD_T, x2: PAD_L, y2: H - PAD_B }));
    if (!any) {
      root.appendChild(svg("text", { "class": "empty", x: W / 2, y: H / 2, "text-anchor": "middle" },
                           opts.emptyText || "no data yet"));
      fig.setAttribute("data-points", "0");
      return;
    }
    var fmin = fig.getAttribute("data-min"), fmax = fig.getAttribute("data-max");
    if (fmin !== null) lo = Math.min(lo, parseFloat(fmin));
    if (fmax !== null) hi = Math.max(hi, parseFloat(fmax));
    if (lo > 0 && fmin === null) lo = 0;
    if (hi === lo) hi = lo + 1;
    if (t1 === t0) t0 = t1 - 1;
    function x(t) { return PAD_L + (t - t0) / (t1 - t0) * (W - PAD_L - PAD_R); }
    function y(v) { return H - PAD_B - (v - lo) / (hi - lo) * (H - PAD_T - PAD_B); }
    [lo, (lo + hi) / 2, hi].forEach(function (v) {
      root.appendChild(svg("text", { "class": "tick", x: PAD_L - 4, y: y(v) + 3, "text-anchor": "end" }, fmt(v)));
    });
    root.appendChild(svg("text", { "class": "tick", x: PAD_L, y: H - 5 }, clock(t0)));
    root.appendChild(svg("text", { "class": "tick", x: W - PAD_R, y: H - 5, "text-anchor": "end" }, clock(t1)));
    var legend = el("div", { "class": "legend" });
    var total = 0;
    series.forEach(function (s, k) {
      var d = "", pen = "M", n = 0, last = null;
      s.values.forEach(function (v, i) {
        if (v === null || v === undefined) { pen = "M"; return; }
        d += pen + x(times[i]).toFixed(1) + " " + y(v).toFixed(1) + " ";
        pen = "L"; n++; last = v;
      });
      if (!n) return;
      total += n;
      var color = COLORS[k % COLORS.length];
      root.appendChild(svg("path", { "class": "series", d: d.trim(), stroke: color,
                                     "data-name": s.name, "data-points": n, "data-last": last }));
      var item = el("span");
      var sw = el("i"); sw.style.background = color;
      item.appendChild(sw);
      item.appendChild(document.createTextNode(s.name + " " + fmt(last)));
      legend.appendChild(item);
    });
    fig.setAttribute("data-points", String(total));
    fig.appendChild(legend);
  }

  function pick(doc, prefix) {
    var out = [];
    Object.keys(doc.series).forEach(function (name) {
      if (name.indexOf(prefix) === 0) out.push({ name: name.slice(prefix.length), values: doc.series[name] });
    });
    return out;
  }
  function lastOf(values) {
    for (var i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i];
    return null;
  }

  function renderSeries(doc) {
    var t = doc.t, s = doc.series;
    document.getElementById("worker").textContent = "worker " + doc.worker;
    document.getElementById("defs").textContent = "definitions " + doc.definition_version;
    drawChart(document.getElementById("chart-events"), t, [{ name: "events/s", values: s.events_per_s || [] }]);
    drawChart(document.getElementById("chart-lag"), t, [{ name: "lag", values: s.lag_records || [] }]);
    drawChart(document.getElementById("chart-dlq"), t, [{ name: "dead letters/s", values: s.dead_letters_per_s || [] }]);
    var segs = pick(doc, "segment:");
    segs.sort(function (a, b) { return (lastOf(b.values) || 0) - (lastOf(a.values) || 0); });
    drawChart(document.getElementById("chart-segments"), t, segs.slice(0, 8));
    var noModels = "no online models on this worker";
    drawChart(document.getElementById("chart-auc"), t, pick(doc, "auc:").concat(
      pick(doc, "rolling_auc:").map(function (r) { return { name: r.name + " (rolling)", values: r.values }; })),
      { emptyText: noModels });
    drawChart(document.getElementById("chart-logloss"), t, pick(doc, "log_loss:"), { emptyText: noModels });
    document.getElementById("t-events").textContent = fmt(lastOf(s.events_per_s || []));
    document.getElementById("t-lag").textContent = fmt(lastOf(s.lag_records || []));
    document.getElementById("t-dlq").textContent = fmt(lastOf(s.dead_letters_per_s || []));
    document.getElementById("t-changes").textContent = fmt(lastOf(s.changes_per_s || []));
    document.getElementById("t-latency").textContent = fmt(lastOf(s.processing_ms || []), 2);
  }

  function renderFlow(doc) {
    document.getElementById("t-last").textContent = doc.last_event_time || "–";
    var body = document.querySelector("#partitions tbody");
    body.textContent = "";
    doc.partitions.forEach(function (p) {
      var tr = el("tr");
      [p.partition, p.lag_total, p.last_event_time, p.watermark, p.messages, p.last_message_received_at]
        .forEach(function (v) { tr.appendChild(el("td", {}, v === undefined || v === null ? "–" : v)); });
      body.appendChild(tr);
    });
    var dl = document.getElementById("dead-letters");
    var stages = Object.keys(doc.dead_letters.by_stage);
    dl.textContent = stages.length ? "" : "none";
    stages.forEach(function (k) { dl.appendChild(el("span", { "class": "chip" }, k + ": " + doc.dead_letters.by_stage[k])); });
  }

  function refresh() {
    var status = document.getElementById("status");
    Promise.all([get("/dashboard/series"), get("/flow")]).then(function (r) {
      renderSeries(r[0].body);
      renderFlow(r[1].body);
      status.textContent = "live · " + r[0].body.t.length + " samples";
      status.className = "status ok";
      refreshMs = Math.max(1000, Math.min(10000, (r[0].body.interval || 2) * 1000));
    }).catch(function (e) {
      status.textContent = "error: " + e.message;
      status.className = "status bad";
    }).then(function () { setTimeout(refresh, refreshMs); });
  }

  function kv(parent, obj, keys) {
    var box = el("div", { "class": "kv" });
    keys.forEach(function (k) {
      if (!(k in obj)) return;
      var d = el("div");
      d.appendChild(el("span", {}, k + ": "));
      d.appendChild(document.createTextNode(obj[k] === null ? "–" : String(obj[k])));
      box.appendChild(d);
    });
    parent.appendChild(box);
  }

  function renderCustomer(status, doc) {
    var panel = document.getElementById("customer");
    panel.hidden = false;
    panel.textContent = "";
    if (status !== 200) {
      panel.appendChild(el("h2", { "class": "error" }, (doc.error || "error") + ": " + (doc.detail || "")));
      return;
    }
    panel.appendChild(el("h2", {}, "Customer " + doc.key + (doc.anonymous ? " (visitor)" : "") +
                                   " · partition " + doc.partition + " · served by " + doc.served_by));
    var segs = el("div");
    segs.appendChild(el("span", { "class": "muted" }, "segments: "));
    doc.segments.forEach(function (s) {
      segs.appendChild(el("span", { "class": "chip" }, s.segment + " since " + s.since + (s.holdout ? " (holdout)" : "")));
    });
    if (!doc.segments.length) segs.appendChild(el("span", { "class": "muted" }, "none"));
    panel.appendChild(segs);
    panel.appendChild(el("h2", {}, "Scores"));
    kv(panel, doc.scores, ["churn_risk", "abandon_risk", "clv", "clv_historical", "next_order_at", "due_to_reorder"]);
    var reasons = doc.scores.reasons || {};
    Object.keys(reasons).forEach(function (m) {
      if (!reasons[m].length) return;
      panel.appendChild(el("div", { "class": "muted" }, m + " because: " + reasons[m].map(function (r) {
        return r.feature + "=" + r.value + (r.informational ? "" : " (" + (r.contribution >= 0 ? "+" : "") + r.contribution + ")");
      }).join(", ")));
    });
    panel.appendChild(el("h2", {}, "Profile"));
    kv(panel, doc.profile, ["orders", "net_revenue", "aov", "purchase_frequency", "days_since_last_order",
      "tenure_days", "sessions", "carts_abandoned", "discounted_share", "mean_rating", "tickets", "clv_simple"]);
    if (doc.session) {
      panel.appendChild(el("h2", {}, "Open session"));
      var cart = doc.session.cart;
      kv(panel, { session_id: doc.session.session_id, started_at: doc.session.started_at,
                  events: doc.session.events, cart_items: cart ? cart.item_count : 0,
                  cart_value: cart ? cart.value : 0 },
         ["session_id", "started_at", "events", "cart_items", "cart_value"]);
    }
    panel.appendChild(el("h2", {}, "Last changes"));
    var t = el("table");
    doc.recent_changes.forEach(function (c) {
      var tr = el("tr");
      [c.at, c.segment, c.change].forEach(function (v) { tr.appendChild(el("td", {}, v)); });
      t.appendChild(tr);
    });
    panel.appendChild(t);
  }

  document.getElementById("search").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var id = document.getElementById("customer-id").value.trim();
    if (!id) return;
    get("/customers/" + encodeURIComponent(id)).then(function (r) { renderCustomer(r.status, r.body); })
      .catch(function (e) { renderCustomer(0, { error: "error", detail: e.message }); });
  });
  document.getElementById("token-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    token = document.getElementById("token").value;
    try { sessionStorage.setItem("retention-token", token); } catch (e) { /* ignore */ }
    document.getElementById("auth").hidden = true;
  });
  refresh();
})();
