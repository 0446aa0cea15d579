"""How governance's reports look (validation, impact): one style, no outside resource."""

#: The reports' look: readable in a browser and on paper, no outside resource.
STYLE = (
    "body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
    "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;"
    "padding:.2rem .5rem;text-align:right}th{background:#f4f4f4}"
    ".verdict{padding:.6rem 1rem;border-left:4px solid #36c;background:#f3f6fc}"
)
