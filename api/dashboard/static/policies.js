// clipmod policy pages: ask before a rollback, a stopped shadow run or a deleted draft.
// Each action is a plain form; without JavaScript it simply happens without the question.
"use strict";
document.addEventListener(
  "click",
  (e) => {
    const button = e.target.closest("button[data-confirm]");
    if (!button) return;
    const scope = button.form?.elements.tenant;
    const who = scope && scope.tagName === "SELECT" ? ` (for ${scope.value || "everyone"})` : "";
    if (!window.confirm(button.dataset.confirm + who)) {
      e.preventDefault();
      e.stopPropagation();
    }
  },
  true,
);
