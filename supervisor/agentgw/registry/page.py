"""The registry's HTML page: the profiles table, self-contained (inline CSS, no scripts). Pure."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from agentgw import __version__
from agentgw.model.status import COLUMNS, ProfileStatus

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#1b1f23;background:#fafbfc}
h1{font-size:1.3em;margin:0 0 .3em}
p.meta{color:#586069;margin:0 0 1em}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0002}
th,td{padding:.35em .7em;border-bottom:1px solid #e1e4e8;text-align:left;white-space:nowrap}
th{background:#f1f3f5;font-weight:600}
td.v-yes,td.v-isolated{color:#116329;font-weight:600}
td.v-no,td.v-not-isolated{color:#b31d28;font-weight:600}
td.v-unknown,td.v-unproven,td.v-stale,td.v-not-enforced{color:#9a6700}
ul.why{color:#586069}
""".strip()

# Columns whose cell gets a verdict class and the reason as a tooltip.
VERDICTS = {"aligned", "isolation"}


def _verdict_class(value: str) -> str:
    return "v-" + value.split(" (")[0].replace(" ", "-")


def _row(status: ProfileStatus) -> str:
    cells = status.cells()
    reasons = {"aligned": status.aligned.reason, "isolation": status.isolation.reason}
    tds = []
    for column in COLUMNS:
        text = escape(cells[column])
        if column in VERDICTS:
            css = _verdict_class(status.aligned.state if column == "aligned"
                                 else status.isolation.state)
            tds.append(f'<td class="{css}" title="{escape(reasons[column])}">{text}</td>')
        else:
            tds.append(f"<td>{text}</td>")
    return f'<tr data-profile="{escape(status.profile)}">{"".join(tds)}</tr>'


def render_page(statuses: Sequence[ProfileStatus], *, generated_at: str, caller: str) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
    rows = "\n".join(_row(s) for s in statuses)
    if not statuses:
        rows = f'<tr><td colspan="{len(COLUMNS)}">no profiles visible to {escape(caller)}</td></tr>'
    notes = "".join(
        f"<li>{escape(s.profile)}: aligned {escape(s.aligned.state)}: "
        f"{escape(s.aligned.reason)}</li>"
        for s in statuses
        if s.aligned.state != "yes"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>agentgw registry</title><style>{CSS}</style></head>
<body><h1>agentgw registry</h1>
<p class="meta">snapshot {escape(generated_at)} &middot; seen as {escape(caller)} &middot;
agentgw {escape(__version__)} &middot; <a href="/v1/profiles">JSON</a> &middot;
<a href="/metrics">metrics</a> &middot; <a href="/openapi.json">OpenAPI</a></p>
<table id="profiles"><thead><tr>{head}</tr></thead>
<tbody>
{rows}
</tbody></table>
<ul class="why">{notes}</ul>
</body></html>
"""
