"""Model cards: the ``README.md`` written beside a model's weights (converted or trained)."""

from __future__ import annotations

HEADER = """---
library_name: diffews
tags:
- few-shot-segmentation
- diffusion
---
"""

USE = """## Use

```python
from diffews import DiffewSPipeline

pipe = DiffewSPipeline.from_pretrained("path/to/this/folder")
result = pipe(query_images, support_images, support_masks)
```
"""


def render_card(title: str, summary: str, sections: str = "") -> str:
    """Markdown card: metadata, ``# title``, `summary`, a usage section, then `sections` (markdown)."""
    card = f"{HEADER}\n# {title}\n\n{summary.rstrip()}\n\n{USE}"
    return f"{card}\n{sections}" if sections else card
