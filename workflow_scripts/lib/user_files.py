"""Files users give (chat sets, benchmark CSVs, unpacked archives), read with one-line errors that
say where the problem is and what to do."""
from pathlib import Path

from workflow_scripts.lib.stage_cli import StageError

LISTED_ENTRIES = 8


def read_utf8(path: Path):
    """The text of a UTF-8 file (a leading BOM dropped); bytes that are not UTF-8 are one line
    naming the file, the line and the byte offset."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise StageError(f"{path}: line {line} (byte {err.start}): {data[err.start:err.end]!r} is not UTF-8; "
                         "save the file as UTF-8 (e.g. iconv -f GB18030 -t UTF-8)") from None


def folder_contents(folder: Path):
    """What a folder holds, for a message: its first files and folders, relative to it."""
    entries = sorted(str(p.relative_to(folder)) + "/" * p.is_dir() for p in folder.rglob("*"))
    more = f", ... ({len(entries) - LISTED_ENTRIES} more)" if len(entries) > LISTED_ENTRIES else ""
    return ", ".join(entries[:LISTED_ENTRIES]) + more or "nothing"
