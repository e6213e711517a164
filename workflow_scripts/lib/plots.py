"""Matplotlib on the file-only Agg backend (jobs have no display), and PNGs written atomically."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from workflow_scripts.lib.atomic_files import atomic_path  # noqa: E402


def save_png(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
