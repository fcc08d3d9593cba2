// clipmod review dashboard: keyboard, selection, reveal logging and claim renewal.
// Everything here is an enhancement: each action is also a plain form or link.
"use strict";
(() => {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

  const post = (url, body) =>
    fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, "X-Requested-With": "fetch" },
      body: JSON.stringify(body || {}),
    });

  const banner = (text, kind) => {
    let el = document.getElementById("live-banner");
    if (!el) {
      el = document.createElement("p");
      el.id = "live-banner";
      el.setAttribute("role", "alert");
      document.body.appendChild(el);
    }
    el.className = `flash ${kind} banner-fixed`;
    el.textContent = text;
  };

  const sessionEnded = () => banner("Your session has ended: reload the page and sign in again.", "error");

  const errorText = async (resp) => {
    try {
      return (await resp.json()).error.message;
    } catch (_) {
      return `the server answered ${resp.status}`;
    }
  };

  // Keys type text in text fields; on a checkbox or button they are still shortcuts.
  const typing = (e) => {
    const t = e.target;
    if (!(t instanceof HTMLElement)) return false;
    if (t.isContentEditable || t.tagName === "TEXTAREA" || t.tagName === "SELECT") return true;
    return t.tagName === "INPUT" && !/^(checkbox|radio|button|submit)$/.test(t.type);
  };

  // Blurred media: a click or space reveals it, and each first reveal is logged server-side.
  const logged = new Set();
  const reveal = (media) => {
    if (!media || !media.classList.contains("blurred")) return false;
    media.classList.remove("blurred");
    const url = media.dataset.revealUrl;
    if (url && !logged.has(url)) {
      logged.add(url);
      post(url).then(async (r) => {
        if (r.status === 401) sessionEnded();
        else if (!r.ok) banner(`Reveal not logged: ${await errorText(r)}`, "warn");
      });
    }
    return true;
  };
  document.addEventListener(
    "click",
    (e) => {
      const media = e.target.closest(".media.blurred");
      if (media) {
        e.preventDefault();
        e.stopPropagation();
        reveal(media);
      }
    },
    true,
  );

  const help = document.getElementById("help");
  let busy = false; // one navigation or submission per key press: no double decisions

  const go = (href) => {
    if (!href || busy) return;
    busy = true;
    window.location.assign(href);
  };

  // ----- the item page -----
  const decideForm = document.getElementById("decide");
  const claimBanner = $("[data-claim-url]");
  if (claimBanner) {
    const every = Math.max(5, Number(claimBanner.dataset.lease || 300) / 3) * 1000;
    setInterval(async () => {
      const r = await post(claimBanner.dataset.claimUrl);
      if (r.ok) {
        const until = new Date((await r.json()).expires_at);
        const el = document.getElementById("claim-until");
        if (el) el.textContent = until.toISOString().slice(11, 19);
      } else if (r.status === 401) sessionEnded();
      else banner(await errorText(r), "warn");
    }, every);
  }
  if (decideForm) {
    decideForm.addEventListener("submit", (e) => {
      if (busy) e.preventDefault();
      busy = true;
    });
  }

  const itemKeys = (e) => {
    const k = e.key;
    if (decideForm && (k === "a" || k === "r" || k === "e")) {
      const button = $(`button[data-key="${k}"]`, decideForm);
      if (button && !busy) decideForm.requestSubmit(button);
      return true;
    }
    if (k === "j") return go($("#next")?.href), true;
    if (k === "k") return go($("#prev")?.href), true;
    if (k === " ") return reveal($("#item-media")), true;
    return false;
  };

  // ----- the queue page -----
  const table = document.getElementById("queue-table");
  const bulkForm = document.getElementById("bulk");
  const rows = table ? $$("tbody tr", table) : [];
  const boxes = rows.map((r) => $('input[name="item"]', r));
  let cursor = 0;
  let anchor = null;

  const refresh = () => {
    const n = boxes.filter((b) => b.checked).length;
    rows.forEach((r, i) => r.classList.toggle("selected", boxes[i].checked));
    const count = document.getElementById("selected-count");
    if (count) count.textContent = `${n} selected`;
    const all = document.getElementById("select-all");
    if (all) all.checked = n > 0 && n === boxes.length;
  };
  const setCursor = (i) => {
    if (!rows.length) return;
    cursor = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach((r, j) => r.classList.toggle("cursor", j === cursor));
    rows[cursor].scrollIntoView({ block: "nearest" });
  };
  const selectRange = (from, to, value) => {
    const [lo, hi] = from < to ? [from, to] : [to, from];
    for (let i = lo; i <= hi; i++) boxes[i].checked = value;
  };

  if (table) {
    setCursor(0);
    rows.forEach((row, i) => {
      row.addEventListener("click", (e) => {
        const box = boxes[i];
        if (e.target === box) {
          if (e.shiftKey && anchor !== null) selectRange(anchor, i, box.checked);
          anchor = i;
          refresh();
          return;
        }
        if (e.target.closest("a")) return;
        if (e.shiftKey) {
          e.preventDefault();
          box.checked = !box.checked;
          if (anchor !== null) selectRange(anchor, i, box.checked);
          anchor = i;
          refresh();
          return;
        }
        go(row.dataset.href);
      });
    });
    document.getElementById("select-all")?.addEventListener("change", (e) => {
      boxes.forEach((b) => (b.checked = e.target.checked));
      refresh();
    });
    bulkForm.addEventListener("submit", (e) => {
      const n = boxes.filter((b) => b.checked).length;
      if (!n) {
        e.preventDefault();
        banner("Select items first: tick them, press x, or use “Select all on page”.", "warn");
        return;
      }
      const over = Number(bulkForm.dataset.confirmOver || 0);
      const action = e.submitter?.value || "decide";
      if (n > over) {
        if (!window.confirm(`${action[0].toUpperCase()}${action.slice(1)} ${n} items at once?`)) {
          e.preventDefault();
          return;
        }
        bulkForm.elements.confirmed.value = "yes";
      }
      busy = true;
    });
    refresh();
  }

  // Failed items: "Retry all" asks first when it would queue many at once.
  const retryAll = document.getElementById("retry-all");
  if (retryAll) {
    retryAll.addEventListener("submit", (e) => {
      const n = Number(retryAll.dataset.count || 0);
      if (n > Number(retryAll.dataset.confirmOver || 0) && !window.confirm(`Queue ${n} failed items again?`)) {
        e.preventDefault();
      }
    });
  }

  const queueKeys = (e) => {
    const k = e.key;
    if (!table) {
      if (k === "Enter" && $("#start")) return go($("#start").href), true;
      return false;
    }
    if (k === "j") return setCursor(cursor + 1), true;
    if (k === "k") return setCursor(cursor - 1), true;
    if (k === "Enter" || k === "o") return go(rows[cursor].dataset.href), true;
    if (k === "x") {
      boxes[cursor].checked = !boxes[cursor].checked;
      anchor = cursor;
      refresh();
      return true;
    }
    if (k === " ") return reveal($(".media", rows[cursor])), true;
    if (k === "a" || k === "r" || k === "e") {
      if (!boxes.some((b) => b.checked)) {
        boxes[cursor].checked = true;
        refresh();
      }
      const value = { a: "allow", r: "remove", e: "escalate" }[k];
      if (!busy) bulkForm.requestSubmit($(`button[value="${value}"]`, bulkForm));
      return true;
    }
    return false;
  };

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e)) return;
    if (help?.open) return;
    if (e.key === "?") {
      help?.showModal();
      e.preventDefault();
      return;
    }
    if (e.key === "/") {
      const box = $(".search-mini input") || $(".searchbar input");
      if (box) {
        box.focus();
        e.preventDefault();
      }
      return;
    }
    if (e.key === "q" && !table) {
      const back = $(".crumbs a");
      if (back) return go(back.href), e.preventDefault();
    }
    const handled = document.body.classList.contains("item-view")
      ? itemKeys(e)
      : document.body.classList.contains("queue-view")
        ? queueKeys(e)
        : false;
    if (handled) e.preventDefault();
  });
})();
