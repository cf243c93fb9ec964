// Sluice UI: polls the JSON API every second and renders the page the path names. Plots are
// uPlot (vendored); window.sluice exposes them and the last data, for tests and the curious.
(function () {
  "use strict";
  const token = new URLSearchParams(location.search).get("token");
  const withToken = (url) => token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
  const api = (path) => fetch(withToken(path), { cache: "no-store" }).then((r) => {
    if (!r.ok) throw new Error(path + ": " + r.status);
    return r.json();
  });
  const $ = (sel) => document.querySelector(sel);
  const esc = (v) => String(v ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  const num = (v) => v == null ? "" : Number(v).toLocaleString("en-US", { maximumFractionDigits: 1 });
  const bytes = (v) => v == null ? "" : (v / 1048576).toFixed(1) + " MiB";
  const time = (ms) => ms == null ? "" : new Date(ms).toISOString().replace("T", " ").replace("Z", "");
  const duration = (ms) => {
    if (ms == null) return "";
    const s = Math.floor(ms / 1000);
    return s < 60 ? s + " s" : s < 3600 ? Math.floor(s / 60) + " min " + (s % 60) + " s" : Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  };

  const sluice = (window.sluice = { plots: {}, epochs: [], query: null, executors: null, rss: { x: [], series: {} } });

  // Navigation: the path picks the page; links keep the token.
  const route = () => {
    const path = location.pathname;
    const page = path.startsWith("/epochs") ? "epochs" : path.startsWith("/stages") ? "stages" : path.startsWith("/executors") ? "executors" : "overview";
    document.querySelectorAll(".page").forEach((p) => p.classList.toggle("active", p.id === page));
    document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === page));
    return page;
  };
  document.querySelectorAll("nav a").forEach((a) => { a.href = withToken(a.getAttribute("href")); });
  let page = route();

  // Plots.
  const palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
  const plot = (id, names, data, yLabel) => {
    const el = document.getElementById(id);
    const width = Math.max(300, el.clientWidth || 500);
    const key = names.join("|");
    let p = sluice.plots[id];
    if (p && p._key !== key) { p.destroy(); p = null; }
    if (!p) {
      p = new uPlot({
        width, height: 220,
        series: [{}].concat(names.map((n, i) => ({ label: n, stroke: palette[i % palette.length], width: 1.5, points: { show: false } }))),
        axes: [{}, { label: yLabel, size: 60 }],
        scales: { x: { time: true } },
      }, data, el);
      p._key = key;
      sluice.plots[id] = p;
    } else {
      p.setData(data);
    }
    el.dataset.points = String(data[0].length);
  };

  const drawOverview = () => {
    const e = sluice.epochs;
    const x = e.map((r) => r.batch_timestamp_ms / 1000);
    plot("plot-rates", ["input rows/s", "processed rows/s"], [x, e.map((r) => r.input_rows_per_second), e.map((r) => r.processed_rows_per_second)], "rows/s");
    const phases = ["offset_planning", "offsets_write", "execution", "sink_commit", "commit_write"];
    plot("plot-phases", phases, [x].concat(phases.map((ph) => e.map((r) => r.duration_ms[ph]))), "ms");
    const tables = [...new Set(e.flatMap((r) => Object.keys(r.sources || {})))].sort();
    const lag = (r, t) => ((r.sources[t] || {}).partitions || []).reduce((a, p) => a + p.lag, 0);
    plot("plot-lag", ["all tables"].concat(tables), [x, e.map((r) => tables.reduce((a, t) => a + lag(r, t), 0))].concat(tables.map((t) => e.map((r) => lag(r, t)))), "records");
    const sum = (r, f) => (r.state || []).reduce((a, s) => a + s[f], 0);
    plot("plot-state", ["keys", "state MiB"], [x, e.map((r) => sum(r, "rows_total")), e.map((r) => sum(r, "state_bytes") / 1048576)], "");
    const names = Object.keys(sluice.rss.series).sort();
    plot("plot-rss", names.length ? names : ["(no executors)"], [sluice.rss.x].concat(names.length ? names.map((n) => sluice.rss.series[n]) : [sluice.rss.x.map(() => null)]), "MiB");
  };

  const drawSummary = (q) => {
    const items = [
      ["query", q.query_id], ["mode", q.mode], ["state", q.state], ["trigger", q.trigger ?? (q.bounded ? "bounded" : "")],
      ["uptime", duration(q.uptime_ms)], ["executors", q.executors], ["parallelism", q.parallelism], ["stages", q.stages],
      ["epochs committed", q.epochs_committed], ["last committed", q.last_committed_epoch], ["running", q.running_epoch ?? "—"],
      ["watermark", time(q.watermark_ms)], ["rows in", num(q.input_rows)], ["rows out", num(q.sink_rows)],
    ];
    $("#summary").innerHTML = items.map(([k, v]) => `<div><dt>${esc(k)}</dt><dd>${esc(v)}</dd></div>`).join("");
    $("#notices").innerHTML = (q.notices || []).slice(-20).reverse().map((n) => `<li>${esc(time(n.at_ms))} — ${esc(n.message)}</li>`).join("");
    $("#status").textContent = `${q.state} · epoch ${q.last_committed_epoch ?? "—"}`;
  };

  const drawEpochs = () => {
    const rows = sluice.epochs.slice(-200).reverse();
    $("#epochs-table tbody").innerHTML = rows.map((r) => `<tr>
      <td><a href="${withToken("/epochs/" + r.epoch)}">${r.epoch}</a></td><td class="text">${esc(time(r.batch_timestamp_ms))}</td>
      <td>${num(r.input_rows)}</td><td>${num(r.processed_rows_per_second)}</td><td>${num(r.sink_rows)}</td><td>${num(r.sink_files)}</td>
      <td>${num(r.late_records)}</td><td>${num(r.skipped_records + r.dead_lettered_records)}</td><td class="text">${esc(time(r.watermark_ms))}</td>
      <td>${num(r.duration_ms.total)}</td><td>${num(r.duration_ms.execution)}</td><td>${num(r.duration_ms.sink_commit + r.duration_ms.commit_write)}</td>
      <td>${num(r.task_attempts)}</td><td>${r.replay ? "yes" : ""}</td></tr>`).join("");
    const m = location.pathname.match(/^\/epochs\/(\d+)/);
    const detail = $("#epoch-detail");
    if (!m) { detail.innerHTML = ""; return; }
    const r = sluice.epochs.find((x) => x.epoch === Number(m[1]));
    detail.innerHTML = r ? `<h2>Epoch ${r.epoch}</h2><pre>${esc(JSON.stringify(r, null, 2))}</pre>` : `<p>Epoch ${esc(m[1])} is not among the kept records.</p>`;
  };

  let stageEpoch = null;
  const drawStages = async () => {
    const select = $("#stage-epoch");
    const epochs = sluice.epochs.map((r) => r.epoch).reverse();
    const current = select.value;
    select.innerHTML = epochs.slice(0, 200).map((n) => `<option value="${n}">${n}</option>`).join("");
    if (current && epochs.includes(Number(current))) select.value = current;
    stageEpoch = select.value || null;
    const s = await api("/api/v1/stages" + (stageEpoch ? "?epoch=" + stageEpoch : ""));
    $("#stages-list").innerHTML = s.stages.map((st) => {
      const run = st.run;
      const spread = (v, unit) => v ? `${num(v.min)} / ${num(v.median)} / <span class="${v.max > 2 * v.median && v.max > 0 ? "skewed" : ""}">${num(v.max)}</span>${unit}` : "—";
      return `<div class="stage"><h3>Stage ${st.stage} — ${esc(st.tasks ?? run?.tasks)} task(s), output ${esc(st.output ?? "")}${st.inputs.length ? ", reads stages " + st.inputs.join(", ") : ""}${st.tables.length ? ", scans " + esc(st.tables.join(", ")) : ""}</h3>
        <table><tr><th class="text">in epoch ${esc(s.epoch ?? "—")}</th><th>min / median / max</th></tr>
        <tr><td class="text">task time</td><td>${spread(run?.task_ms, " ms")}</td></tr>
        <tr><td class="text">rows per task</td><td>${spread(run?.task_rows, "")}</td></tr>
        <tr><td class="text">rows</td><td>${num(run?.rows)}</td></tr></table>
        ${st.plan ? `<pre>${esc(st.plan)}</pre>` : ""}</div>`;
    }).join("");
  };

  const drawExecutors = (ex) => {
    const a = ex.allocation;
    $("#allocation").textContent = a
      ? `Dynamic allocation after epoch ${a.epoch}: ${a.executors} executor(s) → ${a.target} (${a.reason}; backlog ${num(a.backlog)})`
      : "Dynamic allocation: off (--max-executors not above --min-executors).";
    $("#executors-table tbody").innerHTML = ex.executors.map((e) => `<tr><td>${e.id}</td><td class="text">${esc(e.name)}</td><td class="text">${esc(e.address)}</td>
      <td>${e.pid}</td><td>${e.slots}</td><td>${bytes(e.memory_bytes)}</td><td>${num(e.heartbeat_age_ms)} ms</td><td>${bytes(e.rss_bytes)}</td>
      <td>${bytes(e.peak_rss_bytes)}</td><td>${num(e.tasks_run)}</td><td>${num(e.tasks_failed)}</td></tr>`).join("");
    $("#lost-table tbody").innerHTML = (ex.lost || []).map((l) => `<tr><td>${l.epoch}</td><td>${l.id}</td><td class="text">${esc(l.name)}</td>
      <td>${l.pid ?? ""}</td><td class="text">${esc(l.reason)}</td><td>${esc(JSON.stringify(l.tasks_rerun ?? ""))}</td></tr>`).join("");
  };

  let lastEpoch = null;
  const tick = async () => {
    try {
      const [q, fresh, ex] = await Promise.all([
        api("/api/v1/query"),
        api("/api/v1/epochs" + (lastEpoch == null ? "" : "?since=" + lastEpoch)),
        api("/api/v1/executors"),
      ]);
      sluice.query = q;
      sluice.executors = ex;
      if (fresh.length) {
        sluice.epochs = sluice.epochs.concat(fresh).slice(-1000);
        lastEpoch = sluice.epochs[sluice.epochs.length - 1].epoch;
      }
      if (q.mode === "live") {
        const now = Date.now() / 1000;
        sluice.rss.x.push(now);
        const seen = new Set();
        for (const e of ex.executors) {
          seen.add(e.name);
          if (!sluice.rss.series[e.name]) sluice.rss.series[e.name] = sluice.rss.x.slice(0, -1).map(() => null);
          sluice.rss.series[e.name].push(e.rss_bytes / 1048576);
        }
        for (const [name, s] of Object.entries(sluice.rss.series)) if (!seen.has(name)) s.push(null);
        if (sluice.rss.x.length > 900) {
          sluice.rss.x.shift();
          Object.values(sluice.rss.series).forEach((s) => s.shift());
        }
      }
      drawSummary(q);
      if (page === "overview") drawOverview();
      if (page === "epochs") drawEpochs();
      if (page === "stages") await drawStages();
      if (page === "executors") drawExecutors(ex);
      document.body.dataset.ticks = String(Number(document.body.dataset.ticks || 0) + 1);
    } catch (err) {
      $("#status").textContent = "cannot reach the driver (" + err.message + ")";
    }
  };
  $("#stage-epoch").addEventListener("change", () => drawStages());
  tick();
  setInterval(tick, 1000);
})();
