"""Edit a policy's YAML text in place: the editor's "apply to draft" for suggested thresholds.

Re-dumping the parsed YAML would lose the author's comments, key order and quoting, and turn a
one-number change into a diff of the whole file. So the change is made where the value sits in
the text (the YAML node's character span), and nothing else moves.
"""

from __future__ import annotations

import yaml

from clipmod.errors import InvalidInput

THRESHOLDS = ("review_at", "block_at")


def _category_node(root: yaml.Node | None, category_id: str) -> yaml.MappingNode:
    cats = None
    if isinstance(root, yaml.MappingNode):
        cats = next((v for k, v in root.value if k.value == "categories"), None)
    if isinstance(cats, yaml.SequenceNode):
        for node in cats.value:
            if isinstance(node, yaml.MappingNode) and any(
                k.value == "id" and getattr(v, "value", None) == category_id for k, v in node.value
            ):
                return node
    raise InvalidInput(f"the draft has no category {category_id!r}", code="unknown_category")


def set_thresholds(text: str, category_id: str, values: dict[str, float]) -> str:
    """`text` with the category's `review_at` / `block_at` scalars replaced by `values`."""
    unknown = sorted(set(values) - set(THRESHOLDS))
    if unknown:
        raise InvalidInput(f"not a threshold: {', '.join(unknown)}", code="invalid_input")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        raise InvalidInput(
            "the draft is not valid YAML: fix it before applying suggestions", code="invalid_policy"
        ) from None
    category = _category_node(root, category_id)
    spans = []
    for name, value in values.items():
        node = next((v for k, v in category.value if k.value == name), None)
        if not isinstance(node, yaml.ScalarNode):
            raise InvalidInput(
                f"category {category_id!r} has no {name} value to replace", code="invalid_policy"
            )
        spans.append((node.start_mark.index, node.end_mark.index, repr(float(value))))
    for start, end, new in sorted(spans, reverse=True):
        text = text[:start] + new + text[end:]
    return text
