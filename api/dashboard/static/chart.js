// A small SVG chart of an analytics time series: conversions as bars, revenue as a line.
// Own code on purpose (no chart library, no build step): one chart type, ~80 lines.
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 1000, H = 240, PAD = { l: 88, r: 72, t: 12, b: 24 };

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // The bucket start as the API wrote it (company time zone), without re-zoning in the browser.
  function label(t, bucket) {
    const date = t.slice(5, 10), time = t.slice(11, 16);
    return bucket === "day" ? date : bucket === "hour" ? `${date} ${time}` : time;
  }

  function drawChart(container, series, formatMoney) {
    const points = series.points || [];
    container.replaceChildren();
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
                            "aria-label": "Revenue and conversions over time" });
    container.append(svg);
    if (points.length === 0) {
      svg.append(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "No data in this period"));
      return;
    }
    const iw = W - PAD.l - PAD.r, ih = H - PAD.t - PAD.b;
    const revenue = points.map((p) => Number(p.revenue)); // display scale only
    const conversions = points.map((p) => p.conversions);
    const maxRev = Math.max(...revenue, 0) || 1, maxConv = Math.max(...conversions, 0) || 1;
    const step = iw / points.length;
    const x = (i) => PAD.l + step * i + step / 2;
    const yRev = (v) => PAD.t + ih - (v / maxRev) * ih;

    svg.append(el("line", { class: "axis", x1: PAD.l, x2: W - PAD.r, y1: PAD.t + ih, y2: PAD.t + ih }));
    conversions.forEach((c, i) => {
      const h = (c / maxConv) * ih;
      const bar = el("rect", { class: "bar", x: x(i) - Math.max(1, step * 0.35), width: Math.max(2, step * 0.7),
                               y: PAD.t + ih - h, height: h });
      bar.append(el("title", {}, `${label(points[i].t, series.bucket)}: ${c} conversions, ` +
                                 `${formatMoney(points[i].revenue)} revenue`));
      svg.append(bar);
    });
    const path = revenue.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${yRev(v).toFixed(1)}`).join(" ");
    svg.append(el("path", { class: "line", d: path }));

    svg.append(el("text", { x: PAD.l - 6, y: PAD.t + 8, "text-anchor": "end" }, formatMoney(String(maxRev))));
    svg.append(el("text", { x: PAD.l - 6, y: PAD.t + ih, "text-anchor": "end" }, "0"));
    svg.append(el("text", { x: W - PAD.r + 6, y: PAD.t + 8 }, `${maxConv} conv.`));
    const ticks = new Set([0, Math.floor((points.length - 1) / 2), points.length - 1]);
    for (const i of ticks) {
      svg.append(el("text", { x: x(i), y: H - 6, "text-anchor": "middle" }, label(points[i].t, series.bucket)));
    }
  }

  window.drawChart = drawChart;
})();
