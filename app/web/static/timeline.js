// crm-guard timeline pages: lane toggles, record jump box, revert plan preview. No build step.
(function () {
  "use strict";

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Show or hide rows by actor kind from the legend chips (client side, no reload).
  document.querySelectorAll(".kind-toggle").forEach(function (box) {
    box.addEventListener("change", function () {
      var hidden = {};
      document.querySelectorAll(".kind-toggle").forEach(function (b) { if (!b.checked) hidden[b.dataset.kind] = true; });
      document.querySelectorAll(".timeline .row[data-kind]").forEach(function (row) {
        row.classList.toggle("hidden", !!hidden[row.dataset.kind]);
      });
    });
  });

  // Local time as a tooltip on every UTC timestamp.
  document.querySelectorAll("time[datetime]").forEach(function (t) {
    var ms = Number(t.getAttribute("datetime"));
    if (!isNaN(ms)) t.title = new Date(ms).toLocaleString();
  });

  var jump = document.getElementById("jump");
  if (jump) {
    jump.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var key = document.getElementById("jump-key").value.trim();
      if (key) window.location.href = "/records/" + key.split("/").map(encodeURIComponent).join("/");
    });
  }

  function show(value) {
    if (value === null || value === undefined || value === "") return "(empty)";
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  var planForm = document.getElementById("plan-form");
  if (planForm) {
    planForm.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var agent = planForm.closest(".plan").dataset.agent;
      var params = new URLSearchParams();
      params.set("since", document.getElementById("plan-since").value.trim());
      document.getElementById("plan-fields").value.split(",").forEach(function (f) {
        if (f.trim()) params.append("field", f.trim());
      });
      var out = document.getElementById("plan-result");
      out.textContent = "Computing…";
      var url = "/api/agents/" + encodeURIComponent(agent) + "/revert-plan?" + params.toString();
      fetch(url).then(function (r) { return r.json().then(function (body) { return [r.ok, body]; }); })
        .then(function (res) {
          var ok = res[0], plan = res[1];
          out.textContent = "";
          if (!ok) { out.appendChild(el("p", { "class": "error" }, plan.error || "error")); return; }
          var s = plan.summary;
          out.appendChild(el("p", { "class": "summary" },
            s.fields_to_restore + " fields to restore on " + s.records + " records; " +
            s.skipped_human_changed + " left alone because a human changed them later; " +
            s.fields_to_clear_by_hand + " to clear by hand."));
          var link = el("a", { href: url, download: "revert-plan.json" }, "Download JSON");
          out.appendChild(link);
          if (!plan.items.length && !plan.skipped_human_changed.length) return;
          var table = el("table", { "class": "plan-items" });
          var head = el("tr");
          ["Record", "Field", "Restore", "Agent's value", "Status"].forEach(function (h) { head.appendChild(el("th", {}, h)); });
          table.appendChild(el("thead")).appendChild(head);
          var body = el("tbody");
          plan.items.forEach(function (i) {
            var tr = el("tr");
            [i.record_key, i.field, show(i.restore_value), show(i.agent_value), i.clear ? "clear by hand" : "restore"]
              .forEach(function (c) { tr.appendChild(el("td", {}, c)); });
            body.appendChild(tr);
          });
          plan.skipped_human_changed.forEach(function (i) {
            var tr = el("tr", { "class": "skipped" });
            [i.record_key, i.field, "—", show(i.agent_value), "skipped: human changed it"]
              .forEach(function (c) { tr.appendChild(el("td", {}, c)); });
            body.appendChild(tr);
          });
          table.appendChild(body);
          out.appendChild(table);
        })
        .catch(function (err) { out.textContent = "Failed: " + err; });
    });
  }
})();
