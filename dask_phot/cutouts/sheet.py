"""A contact sheet: one HTML page of many cutouts, to judge a colour choice by eye.

:func:`contact_sheet` picks sources spread from the brightest to the faintest
(evenly in rank of their peak S/N), and shows each source's composites side by
side, one column per method, with the stretch each used; the images are the
PNGs the run wrote (linked, not copied), enlarged without smoothing.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["contact_sheet"]

_STYLE = """
body { font-family: sans-serif; margin: 1em; background: #222; color: #ddd; }
h1 { font-size: 1.3em; } p { max-width: 60em; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(%dpx, 1fr));
        gap: 10px; }
.card { background: #111; padding: 6px; border-radius: 4px; }
.card img { width: %dpx; height: %dpx; image-rendering: pixelated; display: block; }
.pair { display: flex; gap: 4px; }
.cap { font-size: 11px; line-height: 1.3; margin-top: 3px; }
.m { font-size: 10px; color: #9ab; }
"""


def _pick(rows: pd.DataFrame, n: int, sort_by: str) -> pd.DataFrame:
    if sort_by in rows:
        rows = rows.sort_values(sort_by, ascending=False, kind="stable", na_position="last")
    if len(rows) <= n:
        return rows
    take = np.unique(np.linspace(0, len(rows) - 1, n).round().astype(int))
    return rows.iloc[take]


def _methods(rows: pd.DataFrame, methods: Sequence[str] | None) -> list[tuple[str, str]]:
    """(method, column) of the composites to show."""
    found = [c.removesuffix("_stretch") for c in rows.columns if c.endswith("_stretch")]
    methods = list(methods or found)
    columns = ["png"] + [f"png_{m}" for m in methods[1:]]
    return [(m, c) for m, c in zip(methods, columns, strict=False) if c in rows]


def _flags(flag: object) -> str:
    """The detection flags worth a glance: one exposure, a cosmic ray nearby."""
    from dask_phot.detect.extract import COSMIC_RAY, SINGLE_EXPOSURE

    try:
        value = int(flag)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return ""
    marks = [name for bit, name in ((SINGLE_EXPOSURE, "1 exposure"),
                                    (COSMIC_RAY, "cosmic ray")) if value & bit]
    return f" <b>[{', '.join(marks)}]</b>" if marks else ""


def _card(row: pd.Series, shown: list[tuple[str, str]], base: Path, id_column: str,
          size: int) -> str:
    imgs, notes = [], []
    for method, column in shown:
        src = os.path.relpath(str(row[column]), base)
        label = html.escape(f"{row[id_column]} {method}")
        imgs.append(f"<img src='{html.escape(src)}' alt='{label}' title='{label}' "
                    f"width='{size}' height='{size}'>")
        q, s = row.get(f"{method}_q"), row.get(f"{method}_stretch")
        detail = f"Q={q:.3g}, s={s:.3g}" if method == "lupton" else f"beta={s:.3g}"
        notes.append(f"<div class='m'>{html.escape(method)}: {detail}</div>")
    group = f"{row['group']} " if str(row.get("group", "")) else ""
    snr = row.get("peak_snr", np.nan)
    caption = (f"{html.escape(group)}#{html.escape(str(row[id_column]))}: "
               f"{row['size_arcsec']:.1f}\" peak S/N {snr:.0f}{_flags(row.get('flag'))}")
    return (f"<div class='card'><div class='pair'>{''.join(imgs)}</div>"
            f"<div class='cap'>{caption}</div>{''.join(notes)}</div>")


def contact_sheet(index: pd.DataFrame | str | os.PathLike[str], path: str | os.PathLike[str],
                  *, n: int = 60, methods: Sequence[str] | None = None,
                  sort_by: str = "peak_snr", id_column: str = "source_id",
                  title: str = "dask-phot cutouts", size: int = 128) -> Path:
    """Write an HTML page of ``n`` sources' colour composites.

    Parameters
    ----------
    index : DataFrame or path
        A cutout run's ``cutouts.parquet`` (or its DataFrame).
    path : path-like
        The HTML file (the PNGs are linked relative to it).
    n : int
        Sources shown, spread over the ``sort_by`` ranking.
    methods : sequence of str, optional
        Composites to show (default: every method of the run).
    sort_by : str
        Ranking column (the peak S/N the colour step measured).
    id_column : str
    title : str
    size : int
        Displayed width of each composite, CSS pixels.

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        An index without colour composites.
    """
    rows = index if isinstance(index, pd.DataFrame) else pd.read_parquet(index)
    rows = rows[rows.get("png", pd.Series("", index=rows.index)).astype(str) != ""]
    if rows.empty:
        raise ValueError("no colour composites to show: run the cutouts with colour bands "
                         "(--rgb)")
    shown = _methods(rows, methods)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    picked = _pick(rows, n, sort_by)
    cards = "\n".join(_card(r, shown, out.parent, id_column, size)
                      for _, r in picked.iterrows())
    names = ", ".join(m for m, _ in shown)
    width = size * len(shown) + 4 * len(shown) + 12
    page = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{_STYLE % (width, size, size)}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{len(picked)} of {len(rows)} sources, from the "
            f"brightest to the faintest (by {html.escape(sort_by)}); composites: "
            f"{html.escape(names)}. Lupton: asinh of the summed intensity, the linear stretch s "
            "from the bands' noise, Q from the source's peak. asinh: each band with a common "
            "white point and softening beta.</p>"
            f"<div class='grid'>\n{cards}\n</div></body></html>\n")
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, "utf-8")
    os.replace(tmp, out)
    return out
