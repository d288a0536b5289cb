"""A many-layer run and what a reader of its dashboard needs, measured in the browser: used by
the readability test (test_browser_readability.py) and the screenshot script.

Bokeh draws plots on a canvas, so the DOM has no boxes for axis labels. Label boxes are
computed from the live page instead: each row's centre from the rendered figure's own y scale
(``frame.y_scale`` of its BokehJS view, after layout), each label's extent from the browser's
font metrics (``measureText`` in the axis' label font). Two labels overlap when their boxes do.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sentrycam.capture import demo

#: Linear layers of the many-layer MLP (the issue: heatmap labels overlapped at 22 rows).
DEPTH = 30
WIDTH = 24


def many_layer_mlp(depth: int = DEPTH, width: int = WIDTH, seed: int = 0) -> nn.Module:
    """An MLP on 8x8 digits with ``depth`` Linear layers (ReLU between them)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(64, width)]
    for _ in range(depth - 2):
        layers += [nn.ReLU(), nn.Linear(width, width)]
    layers += [nn.ReLU(), nn.Linear(width, 10)]
    for layer in layers:  # He init: at this depth PyTorch's default init collapses the features
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


def train_many_layers(url: str, steps: int, *, every: int = 5, seed: int = 0,
                      name: str = "mlp-30-layers") -> Any:
    """Train :func:`many_layer_mlp` on digits for ``steps`` steps with capture attached (a
    fixed schedule, so telemetry and snapshots come every ``every`` steps); returns the run."""
    from sentrycam import capture

    data = demo.load_digits_data(seed=seed)
    model = many_layer_mlp(seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    run = capture.attach(model, (data.x_train[:300], data.y_train[:300]), url=url, every=every,
                         stats_every=every, overhead_budget=None, optimizer=optimizer,
                         criterion=criterion, run_name=name)
    for _, (xb, yb, _epoch) in zip(range(steps), demo.batches(data.x_train, data.y_train, 64,
                                                               seed=seed)):
        optimizer.zero_grad(set_to_none=True)
        criterion(model(xb), yb).backward()
        optimizer.step()
    run.detach()
    return run


# Boxes (CSS pixels, page coordinates) of the y-axis labels of every figure whose name starts
# with the prefix: {figure name: [{label, top, bottom, left, right}], ...}.
_LABEL_BOXES_JS = """(prefix) => {
  const result = {};
  const ctx = document.createElement('canvas').getContext('2d');
  for (const doc of Bokeh.documents) for (const fig of doc.all_models) {
    if (!fig.name || !fig.name.startsWith(prefix)) continue;
    const view = Bokeh.index.find_one(fig);
    if (!view) continue;
    const axis = fig.left[0];
    ctx.font = `${axis.major_label_text_font_style} ${axis.major_label_text_font_size} ` +
               `${axis.major_label_text_font}`;
    const canvas = view.canvas_view.el.getBoundingClientRect();
    const frame = view.frame.bbox;
    result[fig.name] = fig.y_range.factors.map((factor) => {
      const metrics = ctx.measureText(factor);
      const y = canvas.top + view.frame.y_scale.compute(fig.y_range.synthetic(factor));
      const right = canvas.left + frame.left - axis.major_label_standoff - axis.major_tick_out;
      return {label: factor, top: y - metrics.actualBoundingBoxAscent,
              bottom: y + metrics.actualBoundingBoxDescent, right: right,
              left: right - metrics.width, frame_top: canvas.top + frame.top,
              frame_bottom: canvas.top + frame.bottom};
    });
  }
  return result;
}"""


def label_boxes(page: Any, prefix: str) -> dict[str, list[dict[str, Any]]]:
    """The y-axis label boxes of the page's figures named ``prefix...`` (see module doc)."""
    return page.evaluate(_LABEL_BOXES_JS, prefix)


def overlaps(boxes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Pairs of labels whose boxes overlap (all labels of one axis share a column)."""
    ordered = sorted(boxes, key=lambda box: box["top"])
    return [(a["label"], b["label"]) for a, b in zip(ordered, ordered[1:])
            if b["top"] < a["bottom"]]


# {name: drawn size} of every colour bar and legend of the page: a guide counts as drawn when
# it is visible and its view has a box of non-zero size.
_GUIDES_JS = """() => {
  const result = {};
  for (const doc of Bokeh.documents) for (const model of doc.all_models) {
    const kind = model.type;
    if (kind !== 'ColorBar' && kind !== 'Legend') continue;
    const view = Bokeh.index.find_one(model);
    const box = view ? view.bbox : null;
    result[model.name || `${kind}-${model.id}`] = {kind: kind, visible: model.visible,
      width: box ? box.width : 0, height: box ? box.height : 0};
  }
  return result;
}"""


def guides(page: Any) -> dict[str, dict[str, Any]]:
    """Every colour bar and legend on the page: {name: {kind, visible, width, height}}."""
    return page.evaluate(_GUIDES_JS)
