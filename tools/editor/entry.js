// The parts of CodeMirror 6 the policy editor uses, exposed as one global (`window.CM`), so the
// dashboard's own script (api/dashboard/static/editor.js) stays plain, unbundled JavaScript.
export { basicSetup, EditorView } from "codemirror";
export { EditorState, Compartment } from "@codemirror/state";
export { keymap } from "@codemirror/view";
export { indentWithTab } from "@codemirror/commands";
export { yaml } from "@codemirror/lang-yaml";
export { linter, lintGutter, forEachDiagnostic, diagnosticCount, forceLinting } from "@codemirror/lint";
