"""Small PNG plots for asset metadata (matplotlib, headless), shared by every stage."""

from __future__ import annotations

import base64
import io


def new_axes(figsize: tuple[float, float] = (6, 3.5), dpi: int = 100):
    """A fresh (figure, axes) on the non-interactive Agg backend; close it with `png_bytes`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize, dpi=dpi)


def png_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def png_markdown(png: bytes, title: str) -> str:
    """Markdown that the Dagster UI renders as the image itself."""
    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"
