// rollml explorer: polls api/state and redraws the sections whose data changed. Plain JS, no library.
"use strict";

const POLL_MS = Number(new URLSearchParams(location.search).get("poll") || 1000);
const drawn = {};  // section -> JSON of the data last drawn there
let chainTime = null;

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const CONTRACTS = {market: "market", game: "dispute game", registry: "registry", gan_nft: "GanNFT", training: "training", mips: "MIPS", oracle: "oracle"};
let known = {};  // address (lower case) -> contract name of this deployment
const short = (a) => {
  if (!a) return "—";
  const name = known[a.toLowerCase()];
  const text = name ? name : `${a.slice(0, 8)}…${a.slice(-4)}`;
  return `<span class="addr${name ? " contract" : ""}" title="${esc(a)}">${esc(text)}</span>`;
};
const badge = (s) => `<span class="badge ${esc(s)}">${esc(s.replace("_", " "))}</span>`;
const num = (n) => Number(n).toLocaleString("en-US");
const eth = (wei) => {  // wei (a decimal string) as ether, exactly: BigInt, no float rounding
  const w = BigInt(wei), unit = 10n ** 18n;
  const frac = (w % unit).toString().padStart(18, "0").replace(/0+$/, "");
  return `<span title="${esc(wei)} wei">${(w / unit).toString()}${frac ? "." + frac : ""}</span>`;
};

function date(ts) {
  if (ts === null || ts === undefined) return "—";
  const d = new Date(ts * 1000);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function relative(ts) {
  if (ts === null || chainTime === null) return "";
  const s = ts - chainTime;
  const span = (v) => (v >= 3600 ? `${Math.floor(v / 3600)}h ${Math.floor((v % 3600) / 60)}m` : v >= 60 ? `${Math.floor(v / 60)}m ${v % 60}s` : `${v}s`);
  return s >= 0 ? `in ${span(s)}` : `${span(-s)} ago`;
}

const when = (ts) => `<time datetime="${ts === null ? "" : new Date(ts * 1000).toISOString()}" title="${esc(relative(ts))}">${date(ts)}</time>`;

function modelName(state, id) {
  const m = state.models[id];
  return m ? `${esc(m.name)} <span class="hash muted" title="${esc(id)}">${esc(id.slice(0, 10))}…</span>` : `<span class="hash">${esc(id.slice(0, 10))}…</span>`;
}

function outputCell(res) {
  const o = res.output;
  if (o.kind === "image") return `<img src="api/output/${res.result_id}.png" width="48" height="48" alt="output of result ${res.result_id}"> image ${o.shapes[0].join("×")}`;
  if (o.kind === "tensors" && o.values) return `argmax <b>${o.argmax}</b> <span class="muted" title="${esc(o.values.join(", "))}">[${o.shapes[0].join("×")}]</span>`;
  if (o.kind === "tensors") return `tensors ${o.shapes.map((s) => s.join("×")).join(", ")}`;
  return `<span class="muted">${esc(o.kind)}</span>`;
}

function resultLine(res) {
  const cls = res.state === "discarded" ? "result discarded" : "result";
  const extra = res.state === "discarded"
    ? ` <span class="muted">by game <a href="#game-${res.discarded_by_game}">#${res.discarded_by_game}</a> at ${when(res.discarded_at)}</span>`
    : res.state === "pending" ? ` <span class="muted">window ends ${when(res.window_end)}</span>`
    : res.state === "finalized" ? ` <span class="muted">at ${when(res.finalized_at)}</span>` : "";
  const games = res.games.length ? ` · games ${res.games.map((g) => `<a href="#game-${g}">#${g}</a>`).join(" ")}` : "";
  return `<div class="${cls}" data-result-id="${res.result_id}">${badge(res.state)} <span class="what">#${res.result_id} by ${short(res.prover)} · ${num(res.steps)} steps · ${outputCell(res)}</span>${extra}${games}</div>`;
}

function drawRequests(state) {
  $("request-count").textContent = `(${state.requests.length})`;
  $("request-rows").innerHTML = state.requests.map((r) => `
    <tr class="request-row" data-request-id="${r.request_id}" id="request-${r.request_id}">
      <td>#${r.request_id}</td><td>${badge(r.status)}${r.callback_failed ? ' <span class="badge discarded">callback failed</span>' : ""}</td>
      <td>${modelName(state, r.model_id)}</td><td>${short(r.requester)}</td><td>${eth(r.fee)}</td>
      <td>${when(r.created_at)}</td><td>${when(r.expires_at)}</td>
      <td>${r.results.length ? r.results.map(resultLine).join("") : '<span class="muted">no result yet</span>'}</td>
    </tr>`).join("") || '<tr><td colspan="8" class="muted">no requests yet</td></tr>';
}

// ----- dispute games as SVG: one row per round, the picked part funnels into the next row -----
const SVG_W = 1000, X0 = 70, X1 = 990, ROW = 72, BAR = 16;

function gameSvg(g) {
  const rows = [];
  g.rounds.forEach((r, i) => {
    // a split game: the top level over node executions, `open`, then the bottom VM game
    if (g.open && r.level === "bottom" && (i === 0 || g.rounds[i - 1].level === "top")) rows.push({kind: "open"});
    rows.push({kind: "round", r});
  });
  if (g.open && !g.rounds.some((r) => r.level === "bottom")) rows.push({kind: "open"});
  if (g.step) rows.push({kind: "leaf"});
  else if (g.status === "active" && g.turn !== "pick") rows.push({kind: "due"});
  const h = rows.length * ROW + 8;
  const parts = [`<svg class="game-svg" data-game-id="${g.game_id}" viewBox="0 0 ${SVG_W} ${h}" width="${SVG_W}" height="${h}" xmlns="http://www.w3.org/2000/svg">`];
  rows.forEach((row, i) => {
    const y = i * ROW + 4;
    if (row.kind === "round") {
      const r = row.r, span = r.hi - r.lo, unit = r.level === "top" && g.split ? "executions" : "steps";
      const x = (p) => X0 + ((p - r.lo) / span) * (X1 - X0);
      parts.push(`<text x="0" y="${y + 12}">${g.split ? r.level + " " : ""}round ${r.round}</text>`);
      parts.push(`<rect class="interval round" data-round="${r.round}" data-level="${r.level}" x="${X0}" y="${y}" width="${X1 - X0}" height="${BAR}"><title>${unit} ${num(r.lo)} .. ${num(r.hi)}</title></rect>`);
      r.points.slice(1, -1).forEach((p) => parts.push(`<line class="tick" x1="${x(p)}" x2="${x(p)}" y1="${y}" y2="${y + BAR}"/>`));
      if (r.picked) {
        const a = x(r.picked.lo), b = x(r.picked.hi);
        parts.push(`<rect class="pick" x="${a}" y="${y}" width="${Math.max(b - a, 2)}" height="${BAR}"><title>picked part ${r.picked.index}: ${num(r.picked.lo)} .. ${num(r.picked.hi)}</title></rect>`);
        if (i + 1 < rows.length) parts.push(`<polygon class="funnel" points="${a},${y + BAR} ${b},${y + BAR} ${X1},${y + ROW} ${X0},${y + ROW}"/>`);
      }
      const line1 = `${unit} [${num(r.lo)} .. ${num(r.hi)}]: ${num(span)} ${unit} in ${r.segments} parts` +
        (r.picked ? ` → part ${r.picked.index}, [${num(r.picked.lo)} .. ${num(r.picked.hi)}]` : "");
      const line2 = `dissected ${date(r.dissected_at)} (due ${date(r.dissect_due)}) · ` +
        (r.picked ? `picked ${date(r.picked_at)} (due ${date(r.pick_due)})` : `pick due ${date(r.pick_due)} (${relative(r.pick_due)})`);
      parts.push(`<text x="${X0}" y="${y + BAR + 14}">${esc(line1)}</text>`);
      parts.push(`<text class="muted" x="${X0}" y="${y + BAR + 28}">${esc(line2)}</text>`);
    } else if (row.kind === "open") {
      parts.push(`<text x="0" y="${y + 12}">open</text>`);
      parts.push(`<rect class="leaf round" data-round="open" x="${X0}" y="${y}" width="${X1 - X0}" height="${BAR}"/>`);
      parts.push(`<text x="${X0 + 6}" y="${y + 12}">${esc(`execution ${num(g.open.exec)} opened: the node guest runs it in the VM, ${num(g.open.bottom_steps)} steps`)}</text>`);
      parts.push(`<text class="muted" x="${X0}" y="${y + BAR + 14}">${esc(`at ${date(g.open.at)}`)}</text>`);
    } else if (row.kind === "leaf") {
      parts.push(`<text x="0" y="${y + 12}">one step</text>`);
      parts.push(`<rect class="leaf round" data-round="leaf" x="${X0}" y="${y}" width="${X1 - X0}" height="${BAR}"/>`);
      parts.push(`<text x="${X0 + 6}" y="${y + 12}">step ${num(g.step.lo)} → ${num(g.step.lo + 1)} executed on-chain by ${esc(g.step.by.slice(0, 10))}…</text>`);
      parts.push(`<text class="muted" x="${X0}" y="${y + BAR + 14}">${esc(`at ${date(g.step.at)}`)}</text>`);
    } else {
      const who = g.turn === "dissect" ? "proposer's dissection" : "leaf step";
      parts.push(`<text x="0" y="${y + 12}">now</text>`);
      parts.push(`<rect class="interval" x="${X0}" y="${y}" width="${X1 - X0}" height="${BAR}" stroke-dasharray="4 3"/>`);
      parts.push(`<text class="muted" x="${X0}" y="${y + BAR + 14}">${esc(`[${num(g.lo)} .. ${num(g.hi)}] ${who} due ${date(g.deadline)} (${relative(g.deadline)})`)}</text>`);
    }
  });
  parts.push("</svg>");
  return parts.join("");
}

function gameEnd(g) {
  if (!g.end) return `${g.turn} due ${when(g.deadline)} <span class="muted">(${relative(g.deadline)})</span>`;
  if (g.end.cancelled) return `cancelled at ${when(g.end.at)} (its result was already discarded)`;
  const winner = g.end.proposer_won ? "proposer" : "challenger";
  return `${winner} won${g.end.by_timeout ? " by timeout" : " at the one-step proof"} at ${when(g.end.at)}`;
}

function drawGames(state) {
  $("game-count").textContent = `(${state.games.length})`;
  $("game-cards").innerHTML = state.games.slice().reverse().map((g) => `
    <div class="game" id="game-${g.game_id}" data-game-id="${g.game_id}">
      <h3>game #${g.game_id} ${badge(g.status)} on request <a href="#request-${g.request_id}">#${g.request_id}</a>, result #${g.result_id}</h3>
      <div class="meta">proposer ${short(g.proposer)} vs challenger ${short(g.challenger)} · ${num(g.steps)} ${g.split ? "node executions" : "steps"} claimed ·
        opened ${when(g.created_at)} · ${g.rounds.length} round(s) · ${gameEnd(g)}</div>
      ${gameSvg(g)}
    </div>`).join("") || '<p class="muted">no disputes yet</p>';
}

function drawParties(state) {
  $("prover-rows").innerHTML = state.provers.map((p) => `<tr class="prover-row"><td>${short(p.address)}</td><td>${p.posted}</td><td>${p.finalized}</td><td>${p.discarded}</td><td>${num(p.fees)}</td></tr>`).join("")
    || '<tr><td colspan="5" class="muted">no results yet</td></tr>';
  $("challenger-rows").innerHTML = state.challengers.map((c) => `<tr class="challenger-row"><td>${short(c.address)}</td><td>${c.games}</td><td>${c.won}</td><td>${c.lost}</td><td>${c.cancelled}</td><td>${c.active}</td></tr>`).join("")
    || '<tr><td colspan="6" class="muted">no challenges yet</td></tr>';
}

function drawNfts(state) {
  $("nft-count").textContent = `(${state.nfts.length})`;
  $("nft-cards").innerHTML = state.nfts.map((n) => `
    <div class="nft" data-token-id="${n.token_id}">
      ${n.minted ? `<img class="nft-image" src="api/nft/${n.token_id}.png" alt="GAN NFT #${n.token_id}">` : '<div class="placeholder">minting…</div>'}
      <div><b>#${n.token_id}</b> ${n.minted ? badge("finalized") : badge("pending")}</div>
      <div>to ${short(n.minter)}</div><div class="muted">seed ${esc(n.seed.length > 12 ? n.seed.slice(0, 12) + "…" : n.seed)}</div>
      <div class="muted">${n.minted ? `minted ${when(n.minted_at)}` : `requested ${when(n.requested_at)}`}</div>
    </div>`).join("") || '<p class="muted">no mints yet</p>';
}

function drawModels(state) {
  const rows = Object.entries(state.models);
  $("model-count").textContent = `(${rows.length})`;
  $("model-rows").innerHTML = rows.map(([id, m]) => `<tr class="model-row"><td>${esc(m.name)}</td><td class="hash">${esc(id)}</td>
    <td>${esc(m.input_shape.join("×"))}</td><td>${esc(m.output_shape.join("×") || "—")}</td><td>${when(m.registered_at)}</td><td>${short(m.registrant)}</td></tr>`).join("")
    || '<tr><td colspan="6" class="muted">no models registered</td></tr>';
}

function drawDeployment(state) {
  const d = state.deployment;
  $("deployment-rows").innerHTML = Object.entries(d).map(([k, v]) => `<tr><td>${esc(k)}</td><td class="addr">${esc(v)}</td></tr>`).join("");
}

// ----- training runs: the loss curve as an SVG line chart (accepted updates), discarded updates marked -----
const LW = 640, LH = 220, LX0 = 56, LX1 = 620, LY0 = 14, LY1 = 180;

function lossSvg(run) {
  const pts = run.loss_curve.filter((p) => p.loss !== null);
  const bad = run.updates_posted.filter((u) => u.state === "discarded");
  const losses = pts.map((p) => p.loss).concat(bad.map((u) => u.loss).filter((l) => l !== null));
  const parts = [`<svg class="loss-svg" data-run-id="${run.run_id}" viewBox="0 0 ${LW} ${LH}" width="${LW}" height="${LH}" xmlns="http://www.w3.org/2000/svg">`];
  parts.push(`<line class="axis" x1="${LX0}" y1="${LY1}" x2="${LX1}" y2="${LY1}"/><line class="axis" x1="${LX0}" y1="${LY0}" x2="${LX0}" y2="${LY1}"/>`);
  if (!losses.length) {
    parts.push(`<text x="${LX0 + 10}" y="${(LY0 + LY1) / 2}" class="muted">no accepted update yet</text></svg>`);
    return parts.join("");
  }
  let lo = Math.min(...losses), hi = Math.max(...losses);
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const n = Math.max(run.updates - 1, 1);
  const x = (i) => LX0 + (i / n) * (LX1 - LX0);
  const y = (l) => LY1 - ((l - lo) / (hi - lo)) * (LY1 - LY0);
  for (const v of [lo, (lo + hi) / 2, hi]) parts.push(`<text x="${LX0 - 6}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(3)}</text>`);
  parts.push(`<text x="${LX0}" y="${LY1 + 16}">update 0</text><text x="${LX1}" y="${LY1 + 16}" text-anchor="end">update ${run.updates - 1}</text>`);
  parts.push(`<text x="${(LX0 + LX1) / 2}" y="${LY1 + 34}" text-anchor="middle" class="muted">loss of each accepted update (× a discarded one)</text>`);
  if (pts.length) parts.push(`<polyline class="loss" points="${pts.map((p) => `${x(p.index)},${y(p.loss)}`).join(" ")}"/>`);
  pts.forEach((p) => parts.push(`<circle class="point" data-index="${p.index}" cx="${x(p.index)}" cy="${y(p.loss)}" r="3.5"><title>update ${p.index}: loss ${p.loss}</title></circle>`));
  bad.forEach((u) => {
    const cx = x(u.index), cy = u.loss === null ? LY0 : y(u.loss), d = 5;
    parts.push(`<path class="discarded-mark" data-index="${u.index}" d="M${cx - d},${cy - d}L${cx + d},${cy + d}M${cx - d},${cy + d}L${cx + d},${cy - d}"><title>update ${u.index} by ${esc(u.worker)}: discarded by game #${u.discarded_by_game} (claimed loss ${u.loss})</title></path>`);
  });
  parts.push("</svg>");
  return parts.join("");
}

function drawTraining(state) {
  const runs = state.training || [];
  $("run-count").textContent = `(${runs.length})`;
  $("run-cards").innerHTML = runs.map((r) => `
    <div class="run game" id="run-${r.run_id}" data-run-id="${r.run_id}">
      <h3>training run #${r.run_id} ${r.accepted >= r.updates ? badge("finalized") : badge("active")} · ${r.accepted} of ${r.updates} updates accepted, ${r.discarded} discarded</h3>
      <div class="meta">by ${short(r.creator)} · architecture ${modelName(state, r.architecture)} · ${r.steps_per_update} SGD steps per update · created ${when(r.created_at)}
        · ${r.registered ? `final model registered: ${modelName(state, r.final_model_id)} at ${when(r.registered_at)}` : "no final model registered"}</div>
      <div class="meta">workers: ${r.workers.map((w) => `${short(w.address)} (${w.accepted} accepted, ${w.discarded} discarded)`).join(", ") || "none yet"}</div>
      <div class="meta">games on disputed updates: ${r.games.map((g) => `#${g.game_id} on update ${g.index} by ${short(g.challenger)} ${badge(g.status)}`).join(", ") || "none"}</div>
      ${lossSvg(r)}
    </div>`).join("") || '<p class="muted">no training runs</p>';
}

const SECTIONS = {
  requests: [drawRequests, (s) => [s.requests, s.models]],
  games: [drawGames, (s) => s.games],
  parties: [drawParties, (s) => [s.provers, s.challengers]],
  nfts: [drawNfts, (s) => s.nfts],
  training: [drawTraining, (s) => [s.training, s.models]],
  models: [drawModels, (s) => s.models],
  deployment: [drawDeployment, (s) => s.deployment],
};

function draw(state) {
  chainTime = state.chain.time;
  known = {};
  for (const [key, name] of Object.entries(CONTRACTS)) if (state.deployment[key]) known[state.deployment[key].toLowerCase()] = name;
  $("chain").innerHTML = `chain ${state.chain.chain_id} · block <b id="head">${state.chain.head}</b> · ${when(state.chain.time)}` +
    (state.chain.resets ? ` · <span class="badge discarded">chain reset seen ${state.chain.resets}×</span>` : "");
  for (const [name, [fn, pick]] of Object.entries(SECTIONS)) {
    const key = JSON.stringify([pick(state), name === "games" ? chainTime : 0]);
    if (drawn[name] !== key) {
      fn(state);
      drawn[name] = key;
    }
  }
}

async function poll() {
  const live = $("live");
  try {
    const response = await fetch("api/state", {cache: "no-store"});
    const state = await response.json();
    if (!response.ok) throw new Error(state.error || response.statusText);
    $("error").hidden = true;
    draw(state);
    live.className = "live on";
    live.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    $("error").hidden = false;
    $("error").textContent = `cannot read the chain: ${err.message}`;
    live.className = "live";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
