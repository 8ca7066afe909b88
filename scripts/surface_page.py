"""The interactive 3D page of one 2D surface (self-contained HTML, plotly.js inline).

Output: results/figures/surfaces/{dataset}/{model}/{run}/epoch{epoch}/{surface}.html
"""

import json

from landscape import logs
from landscape.exports import write_html

if __name__ == "__main__":
    logs.configure(snakemake.log[0])
    w = snakemake.wildcards
    block = json.loads(snakemake.params.block)
    title = f"{w.dataset} / {w.model} / {w.run}, epoch {w.epoch}: {w.surface}"
    write_html(snakemake.input.surface, snakemake.output.html, log=block["log"], title=title)
