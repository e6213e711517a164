"""Matplotlib on the file-only Agg backend (jobs have no display), and PNGs written atomically."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from workflow_scripts.lib.atomic_files import atomic_path  # noqa: E402


def save_png(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def training_curves(path, title, xlabel, panels, height_ratios=None):
    """A training stage's PNG: panels stacked over one x axis, each (y label, [(xs, ys, line options)])."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 6), sharex=True, height_ratios=height_ratios)
    for ax, (ylabel, lines) in zip(axes, panels):
        for xs, ys, options in lines:
            ax.plot(xs, ys, **options)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if any("label" in options for _, _, options in lines):
            ax.legend()
    axes[0].set_title(title)
    axes[-1].set_xlabel(xlabel)
    fig.tight_layout()
    save_png(fig, path)
