// clipmod policy editor: CodeMirror 6 (vendor/codemirror.js, `window.CM`) plus the server's
// live validation, backtest, threshold suggestions and publish. Every check runs on the server
// (the same function as `clipmod policy lint`); this file only draws what it answers.
"use strict";
(() => {
  // The page's CSP allows CodeMirror's <style> element only with this response's nonce, which
  // the server put on this script tag (read now: currentScript is unset once this returns).
  const nonce = document.currentScript ? document.currentScript.nonce : "";
  const root = document.getElementById("policy-editor");
  if (!root || !window.CM) return;
  const CM = window.CM;
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
    return node;
  };
  const fmt = (n) => Number(n).toLocaleString("en-US");
  const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);
  const dec = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(2));

  const request = async (url, body, method = "POST") => {
    let resp;
    try {
      resp = await fetch(url, {
        method,
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, "X-Requested-With": "fetch" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (_) {
      return { ok: false, status: 0, data: null };
    }
    let data = null;
    try {
      data = await resp.json();
    } catch (_) {
      data = null;
    }
    return { ok: resp.ok, status: resp.status, data };
  };
  const errorOf = (r) => {
    if (r.status === 401) return "Your session has ended: reload the page and sign in again.";
    if (r.status === 0) return "The server cannot be reached.";
    return r.data?.error?.message || `the server answered ${r.status}`;
  };

  // ----- positions: the server counts columns in characters (code points), CodeMirror in
  // UTF-16 units, so an emoji before an error would shift every marker without this.
  const posOf = (doc, line, column) => {
    const l = doc.line(Math.min(Math.max(1, line), doc.lines));
    let pos = l.from;
    let left = column - 1;
    for (const ch of l.text) {
      if (left <= 0) break;
      pos += ch.length;
      left -= 1;
    }
    return Math.min(pos, l.to);
  };
  const tokenEnd = (doc, pos) => {
    const l = doc.lineAt(pos);
    let i = pos - l.from;
    while (i < l.text.length && !/[\s:,\]}]/.test(l.text[i])) i += 1;
    return Math.max(l.from + i, Math.min(pos + 1, l.to));
  };
  const lineCol = (doc, pos) => {
    const l = doc.lineAt(pos);
    return { line: l.number, column: [...l.text.slice(0, pos - l.from)].length + 1 };
  };

  // ----- state shown around the editor
  const state = { errors: null, warnings: null, pending: true, saved: true };
  const publishButton = $("publish");
  const setStatus = (text, kind = "") => {
    const s = $("status");
    s.className = `status ${kind}`;
    s.textContent = text;
  };
  const refreshPublish = () => {
    publishButton.disabled = state.pending || state.errors !== 0;
    publishButton.title = state.errors ? "Fix the errors first" : state.pending ? "Checking…" : "";
  };

  let view = null;
  const jump = (line, column) => {
    const pos = posOf(view.state.doc, line, column);
    view.dispatch({ selection: { anchor: pos }, effects: CM.EditorView.scrollIntoView(pos, { y: "center" }) });
    view.focus();
  };

  const showProblems = (markers) => {
    const list = $("problems");
    list.replaceChildren();
    if (!markers.length) list.append(el("li", { class: "muted", id: "no-problems" }, "No problems."));
    for (const m of markers) {
      const where = `${m.line}:${m.column}`;
      const button = el(
        "button",
        { type: "button", class: "jump" },
        el("span", { class: "where mono" }, where),
        " ",
        el("span", { class: `sev ${m.severity}` }, m.severity),
        " ",
        m.field ? el("span", { class: "field mono" }, `${m.field}: `) : null,
        m.message,
        m.code && m.code !== "invalid_policy" ? el("span", { class: "code muted" }, ` [${m.code}]`) : null,
      );
      button.addEventListener("click", () => jump(m.line, m.column));
      list.append(
        el("li", { class: `problem ${m.severity}`, dataset: { line: m.line, column: m.column, code: m.code } }, button),
      );
    }
    $("error-count").textContent = `${state.errors} error${state.errors === 1 ? "" : "s"}`;
    $("warning-count").textContent = `${state.warnings} warning${state.warnings === 1 ? "" : "s"}`;
  };

  const diagnostic = (doc, m) => {
    const from = posOf(doc, m.line, m.column);
    const code = m.code && m.code !== "invalid_policy" ? ` [${m.code}]` : "";
    return {
      from,
      to: tokenEnd(doc, from),
      severity: m.severity === "error" ? "error" : "warning",
      source: `${m.line}:${m.column}`,
      message: `${m.field ? `${m.field}: ` : ""}${m.message}${code}`,
    };
  };

  // The lint source: CodeMirror calls it after a pause in typing and drops answers for a
  // document that has changed since.
  const check = async (v) => {
    const doc = v.state.doc;
    const r = await request(root.dataset.checkUrl, { yaml: doc.toString() });
    if (v.state.doc !== doc) return [];
    if (!r.ok) {
      Object.assign(state, { errors: 1, warnings: 0, pending: false });
      const m = { severity: "error", code: "request", field: "", message: errorOf(r), line: 1, column: 1 };
      showProblems([m]);
      setStatus(`Not checked: ${m.message}`, "bad");
      refreshPublish();
      return [diagnostic(doc, m)];
    }
    const d = r.data;
    Object.assign(state, { errors: d.errors, warnings: d.warnings, pending: false, saved: d.saved });
    showProblems(d.markers);
    const verdict = d.errors ? `${d.errors} error${d.errors === 1 ? "" : "s"}` : "valid";
    setStatus(
      `${d.saved ? "Saved" : "Not saved (over the size limit)"} · ${verdict} · checked in ${d.elapsed_ms} ms`,
      d.errors ? "bad" : "good",
    );
    refreshPublish();
    return d.markers.map((m) => diagnostic(doc, m));
  };

  const host = $("code");
  const fallback = $("draft-text");
  view = new CM.EditorView({
    parent: host,
    state: CM.EditorState.create({
      doc: fallback.value,
      extensions: [
        CM.basicSetup,
        CM.keymap.of([CM.indentWithTab]),
        CM.yaml(),
        CM.lintGutter(),
        CM.linter(check, { delay: 350 }),
        CM.EditorView.cspNonce.of(nonce),
        CM.EditorView.updateListener.of((u) => {
          if (!u.docChanged) return;
          state.pending = true;
          refreshPublish();
          setStatus("Editing…");
        }),
      ],
    }),
  });
  fallback.hidden = true;
  CM.forceLinting(view);

  // For people and tests alike: where the cursor is, and a way to put it somewhere.
  window.clipmodEditor = {
    view,
    cursor: () => lineCol(view.state.doc, view.state.selection.main.head),
    goto: jump,
    text: () => view.state.doc.toString(),
    state,
  };

  const replaceDoc = (text) => {
    const old = view.state.doc.toString();
    let a = 0;
    while (a < old.length && a < text.length && old[a] === text[a]) a += 1;
    let b = 0;
    while (b < old.length - a && b < text.length - a && old[old.length - 1 - b] === text[text.length - 1 - b]) b += 1;
    view.dispatch({ changes: { from: a, to: old.length - b, insert: text.slice(a, text.length - b) } });
  };

  // ----- publish
  publishButton.addEventListener("click", async () => {
    if (publishButton.disabled) return;
    publishButton.disabled = true;
    const note = $("publish-note");
    note.className = "small muted";
    note.textContent = "Publishing…";
    const r = await request(root.dataset.publishUrl, {
      yaml: view.state.doc.toString(),
      then: $("publish-then").value,
      tenant: $("publish-tenant").value,
    });
    if (r.ok) {
      window.location.assign(r.data.redirect);
      return;
    }
    note.className = "small error-text";
    note.id = "publish-note";
    note.textContent = errorOf(r);
    if (r.data?.markers) showProblems(r.data.markers);
    refreshPublish();
  });

  // ----- backtest
  const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));
  const utc = (v) => (v ? (v.length === 16 ? `${v}:00Z` : `${v}Z`) : null);
  $("backtest-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = e.target;
    const body = { yaml: view.state.doc.toString(), tenant: form.elements.tenant.value };
    if (form.elements.span.value === "last") body.last = Number(form.elements.last.value);
    else Object.assign(body, { since: utc(form.elements.since.value), until: utc(form.elements.until.value) });
    const out = $("backtest-result");
    const bar = $("backtest-progress");
    $("run-backtest").disabled = true;
    out.replaceChildren(el("p", { class: "muted" }, "Running…"));
    let r = await request(root.dataset.backtestUrl, body);
    while (r.ok && r.data.status === "running") {
      bar.hidden = false;
      const p = bar.querySelector("progress");
      if (r.data.total) p.value = Math.min(100, (100 * r.data.done) / r.data.total);
      else p.removeAttribute("value");
      $("backtest-phase").textContent = `${r.data.phase} · ${r.data.elapsed_s.toFixed(1)} s`;
      await sleep(100);
      r = await request(r.data.poll, undefined, "GET");
    }
    bar.hidden = true;
    $("run-backtest").disabled = false;
    if (!r.ok || r.data.status === "failed") {
      const error = r.ok ? r.data.error : r.data?.error;
      out.replaceChildren(el("p", { class: "flash error", id: "backtest-error" }, error?.message || errorOf(r)));
      if (r.data?.markers) showProblems(r.data.markers);
      return;
    }
    out.replaceChildren(renderBacktest(r.data.result));
  });

  const thumb = (ex) => {
    if (!ex) return null;
    const media = ex.image
      ? el(
          "span",
          { class: `media${ex.blurred ? " blurred" : ""}`, dataset: { revealUrl: ex.reveal } },
          el("img", { src: ex.image, alt: `item ${ex.id.slice(0, 8)}`, loading: "lazy" }),
          ex.blurred ? el("span", { class: "veil" }, `blurred · ${ex.score.toFixed(2)}`) : null,
        )
      : el("span", { class: "media textonly" }, ex.text || "(no content)");
    return el("a", { class: "example", href: ex.href, title: `item ${ex.id}`, dataset: { item: ex.id } }, media);
  };

  const renderBacktest = (rep) => {
    const base = Object.entries(rep.baselines).map(([k, n]) => `${k} (${fmt(n)} items)`).join(", ") || "nothing active";
    const summary = el(
      "p",
      { class: "summary", id: "bt-summary" },
      "Re-scored ",
      el("strong", { id: "bt-items" }, fmt(rep.items)),
      ` items (${rep.window}) in ${rep.elapsed_s.toFixed(2)} s, against ${base}.`,
    );
    const actions = el(
      "table",
      { class: "policy-table", id: "bt-actions" },
      el("thead", {}, el("tr", {}, el("th", {}, "Action"), el("th", {}, "Now"), el("th", {}, "Draft"), el("th", {}, "Change"))),
      el(
        "tbody",
        {},
        ["allow", "review", "block"].map((a) => {
          const before = rep.actions.baseline[a] || 0;
          const after = rep.actions.draft[a] || 0;
          const delta = after - before;
          return el(
            "tr",
            { dataset: { action: a } },
            el("td", {}, el("span", { class: `badge ${a}` }, a)),
            el("td", { class: "before" }, fmt(before)),
            el("td", { class: "after" }, fmt(after)),
            el("td", { class: `delta ${delta > 0 ? "up" : delta < 0 ? "down" : ""}` }, delta > 0 ? `+${fmt(delta)}` : fmt(delta)),
          );
        }),
      ),
    );
    const cats = el(
      "table",
      { class: "policy-table", id: "bt-categories" },
      el(
        "thead",
        {},
        el("tr", {}, ["Category", "Flagged now → draft", "Labelled", "Precision now → draft", "Recall now → draft"].map((h) => el("th", {}, h))),
      ),
      el(
        "tbody",
        {},
        rep.categories.map((c) => {
          const b = c.baseline || {};
          const d = c.draft || {};
          return el(
            "tr",
            { dataset: { category: c.id } },
            el("td", {}, c.id),
            el("td", { class: "flagged" }, `${b.flagged ?? "–"} → ${d.flagged ?? "–"}`, el("span", { class: "muted small" }, ` (${pct(b.rate)} → ${pct(d.rate)})`)),
            el("td", {}, fmt(c.labelled)),
            el("td", { class: "precision" }, `${dec(b.precision)} → ${dec(d.precision)}`),
            el("td", { class: "recall" }, `${dec(b.recall)} → ${dec(d.recall)}`),
          );
        }),
      ),
    );
    const moves = rep.transitions.length
      ? rep.transitions.map((t) =>
          el(
            "div",
            { class: "transition", dataset: { move: `${t.before}->${t.after}` } },
            el(
              "p",
              {},
              el("span", { class: `badge ${t.before}` }, t.before),
              " → ",
              el("span", { class: `badge ${t.after}` }, t.after),
              " ",
              el("strong", { class: "n" }, fmt(t.count)),
              ` item${t.count === 1 ? "" : "s"}`,
            ),
            el("div", { class: "thumbs" }, t.examples.map((id) => thumb(rep.examples[id]))),
          ),
        )
      : [el("p", { class: "muted", id: "bt-no-change" }, "No item would change action.")];
    return el(
      "div",
      { class: "backtest" },
      summary,
      el("div", { class: "bt-grid" }, actions, cats),
      el("h3", {}, "Items that would change action"),
      el("div", { class: "transitions", id: "bt-transitions" }, moves),
    );
  };

  // ----- suggestions
  $("suggest-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = $("suggest-result");
    out.replaceChildren(el("p", { class: "muted" }, "Computing…"));
    const r = await request(root.dataset.suggestUrl, {
      yaml: view.state.doc.toString(),
      target_precision: Number($("sg-target").value),
      review_precision: Number($("sg-review").value),
    });
    if (!r.ok) {
      out.replaceChildren(el("p", { class: "flash error", id: "suggest-error" }, errorOf(r)));
      return;
    }
    out.replaceChildren(renderSuggestions(r.data));
  });

  const quality = (q) => (q ? ` (P ${q.precision.toFixed(2)} R ${q.recall.toFixed(2)})` : "");
  const renderSuggestions = (rep) =>
    el(
      "table",
      { class: "policy-table", id: "suggestions" },
      el(
        "thead",
        {},
        el("tr", {}, ["Category", "Labelled (positive)", "review_at", "block_at", "Note", ""].map((h) => el("th", {}, h))),
      ),
      el(
        "tbody",
        {},
        rep.categories.map((s) => {
          const apply = el("button", { type: "button", class: "apply", disabled: s.review_at === null && s.block_at === null }, "Apply to draft");
          apply.addEventListener("click", async () => {
            const r = await request(root.dataset.applyUrl, {
              yaml: view.state.doc.toString(),
              category: s.id,
              review_at: s.review_at,
              block_at: s.block_at,
            });
            if (!r.ok) {
              apply.replaceWith(el("span", { class: "error-text small" }, errorOf(r)));
              return;
            }
            replaceDoc(r.data.yaml);
            apply.textContent = "Applied";
            apply.disabled = true;
          });
          const arrow = (now, next, q) => (next === null ? `${now} (no suggestion)` : `${now} → ${next}${quality(q)}`);
          return el(
            "tr",
            { dataset: { category: s.id } },
            el("td", {}, s.id),
            el("td", {}, `${fmt(s.labelled)} (${fmt(s.positives)})`),
            el("td", { class: "review" }, arrow(s.current.review_at, s.review_at, s.review_quality)),
            el("td", { class: "block" }, arrow(s.current.block_at, s.block_at, s.block_quality)),
            el("td", { class: "small muted" }, s.note || ""),
            el("td", {}, apply),
          );
        }),
      ),
    );
})();
