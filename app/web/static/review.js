// The review page: pending proposals grouped by agent and kind, decided one by one or in a batch.
// Plain JavaScript, no build step. Every value from the API is set with textContent (never HTML).
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const queue = $("#queue");
  const reviewerInput = $("#reviewer");
  const tokenInput = $("#token");
  const message = $("#message");
  const STORE_KEY = "crmGuardReviewer";
  const TOKEN_KEY = "crmGuardApiToken"; // sessionStorage: gone when the tab closes
  let current = null;

  reviewerInput.value = localStorage.getItem(STORE_KEY) || "";
  reviewerInput.addEventListener("change", () => localStorage.setItem(STORE_KEY, reviewerInput.value.trim()));
  tokenInput.value = sessionStorage.getItem(TOKEN_KEY) || "";
  tokenInput.addEventListener("change", () => {
    sessionStorage.setItem(TOKEN_KEY, tokenInput.value.trim());
    identify();
  });

  // A personal token (crm-guard users add) names its holder: the guard records that name on every
  // decision, so the page shows it instead of asking for one.
  async function identify() {
    const token = tokenInput.value.trim();
    reviewerInput.readOnly = false;
    reviewerInput.title = "";
    if (!token) return;
    const response = await fetch("/api/whoami", { headers: { Authorization: `Bearer ${token}` } });
    const who = await response.json().catch(() => ({}));
    if (response.ok && who.user) {
      reviewerInput.value = who.user;
      reviewerInput.readOnly = true;
      reviewerInput.title = `signed in by your token as ${who.user} (${who.role})`;
      show(`Deciding as ${who.user} (${who.role}).`);
    } else if (response.status === 401) {
      show("The guard does not know this token (Token, top right).", "error");
    }
  }

  function show(text, kind) {
    message.textContent = text;
    message.className = kind || "";
  }

  function fmt(value) {
    if (value === null || value === undefined || value === "") return "—";
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function age(ms) {
    const minutes = Math.max(0, Math.round((Date.now() - ms) / 60000));
    if (minutes < 60) return `${minutes} min ago`;
    const hours = Math.round(minutes / 60);
    return hours < 48 ? `${hours} h ago` : `${Math.round(hours / 24)} d ago`;
  }

  async function api(method, path, body) {
    const headers = body ? { "Content-Type": "application/json" } : {};
    const token = tokenInput.value.trim();
    if (token && method !== "GET") headers.Authorization = `Bearer ${token}`;
    const response = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
    const data = await response.json().catch(() => ({ error: response.statusText }));
    if (response.status === 401) {
      tokenInput.focus();
      throw new Error(token ? "the token was not accepted (Token, top right)"
        : "this guard needs its operator token for decisions: enter it under Token (top right)");
    }
    if (response.status === 403) throw new Error(data.message || "your role does not allow this");
    if (!response.ok) throw new Error(data.message ? `${data.error}: ${data.message}` : (data.error || `HTTP ${response.status}`));
    return data;
  }

  function reviewer() {
    const name = reviewerInput.value.trim();
    if (!name) {
      show("Enter your name as reviewer first (top right).", "error");
      reviewerInput.focus();
      return null;
    }
    localStorage.setItem(STORE_KEY, name);
    return name;
  }

  function renderEvidence(target, evidence) {
    if (evidence === null || evidence === undefined || evidence === "") {
      target.textContent = "none given";
      return;
    }
    const parts = Array.isArray(evidence) ? evidence.map(fmt)
      : typeof evidence === "object" ? Object.entries(evidence).map(([k, v]) => `${k}: ${fmt(v)}`)
      : [fmt(evidence)];
    parts.forEach((text, i) => {
      if (i) target.append(" · ");
      const code = document.createElement("code");
      code.textContent = text.length > 300 ? `${text.slice(0, 300)}…` : text;
      target.append(code);
    });
  }

  function buildItem(item) {
    const el = $("#item-template").content.firstElementChild.cloneNode(true);
    el.dataset.id = item.proposal_id;
    el.dataset.agent = item.agent;
    el.dataset.kind = item.kind;
    $(".record", el).textContent = `${item.object_type} ${item.record_id} · ${item.source} · ${item.operation}`;
    const tier = $(".tier", el);
    tier.textContent = item.tier || "?";
    tier.classList.add(item.tier || "low");
    $(".confidence", el).textContent = item.confidence === null ? "" : `confidence ${Math.round(item.confidence * 100)} %`;
    $(".age", el).textContent = `proposed ${age(item.proposed_at)}`;
    $(".pick", el).setAttribute("aria-label", `select ${item.proposal_id}`);
    const body = $("tbody", el);
    for (const f of item.fields) {
      const row = document.createElement("tr");
      const name = document.createElement("td");
      name.className = "field";
      name.textContent = `${f.field} `;
      const small = document.createElement("small");
      small.textContent = f.tier;
      name.append(small);
      const cur = document.createElement("td");
      cur.className = "current";
      if (f.current_known) cur.textContent = fmt(f.current);
      else { cur.textContent = "unknown"; cur.classList.add("unknown"); }
      const proposed = document.createElement("td");
      const input = document.createElement("input");
      input.className = "value";
      input.value = typeof f.proposed === "string" ? f.proposed : JSON.stringify(f.proposed ?? null);
      input.dataset.field = f.field;
      input.dataset.original = input.value;
      input.dataset.type = typeof f.proposed === "string" ? "string" : "json";
      input.setAttribute("aria-label", `proposed ${f.field}`);
      input.addEventListener("input", () => {
        input.classList.toggle("edited", input.value !== input.dataset.original);
        $(".modify", el).disabled = !$$(".value.edited", el).length;
      });
      proposed.append(input);
      row.append(name, cur, proposed);
      body.append(row);
    }
    $(".agent-reason", el).textContent = item.reason || "none given";
    renderEvidence($(".evidence", el), item.evidence);
    const gate = item.gate || {};
    $(".gate", el).textContent = `Gate: ${gate.reason || ""}`;
    $(".approve", el).addEventListener("click", () => decide(el, "approve"));
    $(".modify", el).addEventListener("click", () => decide(el, "modify"));
    $(".reject", el).addEventListener("click", () => decide(el, "reject"));
    $(".pick", el).addEventListener("change", updateCounts);
    el.addEventListener("focus", () => setCurrent(el));
    el.addEventListener("click", () => setCurrent(el));
    return el;
  }

  function render(data) {
    queue.textContent = "";
    queue.setAttribute("aria-busy", "false");
    if (!data.groups.length) {
      const p = document.createElement("p");
      p.className = "empty";
      p.textContent = "Nothing to review.";
      queue.append(p);
    }
    for (const group of data.groups) {
      const section = document.createElement("section");
      section.className = "group";
      section.dataset.agent = group.agent;
      section.dataset.kind = group.kind;
      const h2 = document.createElement("h2");
      const all = document.createElement("input");
      all.type = "checkbox";
      all.className = "group-check";
      all.setAttribute("aria-label", `select all of ${group.agent} ${group.kind}`);
      all.addEventListener("change", () => {
        $$(".item:not(.decided) .pick", section).forEach((box) => { box.checked = all.checked; });
        updateCounts();
      });
      const title = document.createElement("span");
      title.textContent = `${group.agent} · ${group.kind}`;
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = `(${group.count})`;
      h2.append(all, title, count);
      section.append(h2);
      group.items.forEach((item) => section.append(buildItem(item)));
      queue.append(section);
    }
    updateCounts();
    const first = $(".item");
    if (first) setCurrent(first);
  }

  function setCurrent(el) {
    if (current) current.classList.remove("current");
    current = el;
    if (el) el.classList.add("current");
  }

  function updateCounts() {
    const open = $$(".item:not(.decided)");
    $("#pending-count").textContent = String(open.length);
    const selected = $$(".item:not(.decided) .pick:checked").length;
    $("#selected-count").textContent = String(selected);
    $("#batch-approve").disabled = selected === 0;
  }

  function parseValue(input) {
    if (input.dataset.type === "string") return input.value;
    try { return JSON.parse(input.value); } catch (e) { return input.value; }
  }

  function markDecided(el, status, by) {
    el.classList.add("decided");
    const outcome = $(".outcome", el);
    outcome.textContent = `${status} by ${by}`;
    outcome.className = `outcome ${status}`;
    const pick = $(".pick", el);
    pick.checked = false;
    pick.disabled = true;
    $$(".value", el).forEach((input) => { input.disabled = true; });
    updateCounts();
  }

  function next(el, step) {
    const items = $$(".item");
    const open = items.filter((i) => !i.classList.contains("decided"));
    const pool = step === 0 ? open : items;
    if (!pool.length) return null;
    if (step === 0) return open.find((i) => items.indexOf(i) > items.indexOf(el)) || open[0];
    const index = Math.min(pool.length - 1, Math.max(0, pool.indexOf(el) + step));
    return pool[index];
  }

  async function decide(el, action) {
    if (el.classList.contains("decided")) return;
    const by = reviewer();
    if (!by) return;
    const id = el.dataset.id;
    const reason = $(".reason", el).value.trim();
    const body = { by, reason };
    if (action === "reject") {
      if (!reason) {
        show("A rejection needs a reason: the agent learns from it.", "error");
        $(".reason", el).focus();
        return;
      }
      body.category = $(".category", el).value;
    }
    if (action === "modify") {
      const edited = $$(".value.edited", el);
      if (!edited.length) action = "approve";
      else body.set = Object.fromEntries(edited.map((input) => [input.dataset.field, parseValue(input)]));
    }
    try {
      const result = await api("POST", `/api/review/proposals/${encodeURIComponent(id)}/${action}`, body);
      markDecided(el, result.status, by);
      show(`${id}: ${result.status}`, "info");
      const following = next(el, 0);
      if (following && following !== el) { following.focus(); setCurrent(following); }
    } catch (err) {
      show(`${id}: ${err.message}`, "error");
    }
  }

  async function batchApprove() {
    const by = reviewer();
    if (!by) return;
    const picked = $$(".item:not(.decided) .pick:checked").map((box) => box.closest(".item"));
    if (!picked.length) return;
    const ids = picked.map((el) => el.dataset.id);
    try {
      const result = await api("POST", "/api/review/batch-approve", { by, reason: $("#batch-reason").value.trim(), ids });
      for (const id of result.approved) {
        const el = picked.find((item) => item.dataset.id === id);
        if (el) markDecided(el, "approved", by);
      }
      const skipped = result.skipped.map((s) => `${s.proposal_id} (${s.reason})`).join(", ");
      show(`Approved ${result.approved.length}.${skipped ? ` Skipped: ${skipped}` : ""}`, skipped ? "error" : "info");
      $("#select-all").checked = false;
      $$(".group-check").forEach((box) => { box.checked = false; });
    } catch (err) {
      show(`Batch approval failed: ${err.message}`, "error");
    }
  }

  $("#batch-approve").addEventListener("click", batchApprove);
  $("#select-all").addEventListener("change", (event) => {
    $$(".item:not(.decided) .pick").forEach((box) => { box.checked = event.target.checked; });
    updateCounts();
  });

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    const typing = target instanceof HTMLInputElement && target.type !== "checkbox" || target instanceof HTMLSelectElement;
    if (typing) {
      const item = target.closest(".item");
      if (event.key === "Escape" && item) { item.focus(); event.preventDefault(); }
      if (event.key === "Enter" && item && target.classList.contains("value")) { decide(item, "modify"); event.preventDefault(); }
      if (event.key === "Enter" && item && target.classList.contains("reason")) { decide(item, target.value.trim() ? "reject" : "approve"); event.preventDefault(); }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const el = current;
    const go = (step) => { const to = next(el, step); if (to) { to.focus(); setCurrent(to); } };
    switch (event.key) {
      case "j": go(1); break;
      case "k": go(-1); break;
      case "x": if (el && !el.classList.contains("decided")) { const box = $(".pick", el); box.checked = !box.checked; updateCounts(); } break;
      case "a": if (el) decide(el, "approve"); break;
      case "r": if (el) { if ($(".reason", el).value.trim()) decide(el, "reject"); else { $(".reason", el).focus(); show("Type the reason, then Enter to reject.", ""); } } break;
      case "m": if (el) { const input = $(".value", el); if (input) input.focus(); } break;
      case "A": batchApprove(); break;
      default: return;
    }
    event.preventDefault();
  });

  identify().catch(() => {});
  api("GET", "/api/review/proposals")
    .then(render)
    .catch((err) => { queue.setAttribute("aria-busy", "false"); show(`Could not load the queue: ${err.message}`, "error"); });
})();
