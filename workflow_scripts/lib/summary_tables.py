"""The per-corpus table of corpus_summary (markdown) and run_summary (the report's HTML page)."""
SOURCE_KEYS = ["source", "weight", "read", "after_clean", "after_dedup", "train_documents", "train_characters",
               "validation_documents"]
SOURCE_COLUMNS = ["corpus", "weight", "read", "after clean", "after dedup", "train documents (weighted)",
                  "train characters (weighted)", "validation documents"]


def markdown_table(header, rows):
    """A GitHub markdown table; columns after the first are right-aligned (they hold numbers)."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|").replace("\n", " ") for cell in row) + " |"
              for row in rows]
    return "\n".join(lines) + "\n"
