"""Untrusted files over HTTP: resumable downloads with retries and checksums, and safe unpacking.

Used by the dump download and by fetch_data (chat sets and benchmarks given by URL). A transfer
goes to a `.part` file that a later run resumes with an HTTP Range request; a file is moved into
place only once its checksum matches. Archives are unpacked only if no member would land outside
the target folder and their unpacked size stays under a bound.
"""
import http.client
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from workflow_scripts.lib.atomic_files import file_digest
from workflow_scripts.lib.stage_cli import StageError, log

CHUNK = 1 << 20
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def verify(path: Path, expected, source, algorithm="sha1"):
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        path.unlink()
        name = algorithm.upper().replace("SHA", "SHA-")
        raise StageError(f"{source}: {name} mismatch (expected {expected}, got {actual}); the download was "
                         "deleted, run again to fetch it anew")


class Fetcher:
    """HTTP GET with resume (Range), retries with exponential backoff, a size bound and a progress bar."""

    def __init__(self, retries, timeout, backoff, progress_stream, max_bytes=None, remedy="check the URL"):
        self.retries, self.timeout, self.backoff = retries, timeout, backoff
        self.progress_stream, self.max_bytes, self.remedy = progress_stream, max_bytes, remedy
        self.attempts = 0
        self.resumed = False

    def fetch(self, url, dest: Path, sha1=None):
        """Download url to dest through dest.part, verified against sha1 if given."""
        part = dest.with_name(dest.name + ".part")
        part.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(self.retries + 1):
            self.attempts += 1
            try:
                self._transfer(url, part)
                break
            except urllib.error.HTTPError as err:
                if err.code not in RETRYABLE_STATUS or attempt == self.retries:
                    raise StageError(f"{url}: HTTP {err.code} {err.reason}; {self.remedy}") from None
                why = f"HTTP {err.code}"
            except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
                if attempt == self.retries:
                    raise StageError(f"{url}: {err} after {attempt + 1} attempts; the partial file "
                                     f"{part} is kept and the next run resumes it") from None
                why = str(err) or type(err).__name__
            delay = self.backoff * 2 ** attempt
            log.warning("%s: %s; retry %d/%d in %.1fs", url, why, attempt + 1, self.retries, delay)
            time.sleep(delay)
        if sha1:
            verify(part, sha1, url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part.replace(dest)

    def _transfer(self, url, part: Path):
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:  # the .part already holds the whole file
                return
            raise
        with response:
            if have and response.status == 206:
                self.resumed = True
                mode = "ab"
            else:
                have, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = have + int(length) if length else None
            self._check_size(url, total or 0)
            with open(part, mode) as out, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                               desc=Path(url).name, file=self.progress_stream,
                                               mininterval=5) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
                    self._check_size(url, out.tell())
            if total is not None and part.stat().st_size < total:
                raise http.client.IncompleteRead(b"", total - part.stat().st_size)

    def _check_size(self, url, size):
        if self.max_bytes and size > self.max_bytes:
            raise StageError(f"{url}: larger than the {self.max_bytes:,}-byte limit; raise it if the file is "
                             "really that large")


def url_file_name(url):
    """The name a URL's file is saved under: the last part of its path, percent-decoded."""
    return Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "download"


def is_archive(name):
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def unpack(archive: Path, dest: Path, max_bytes):
    """Unpack a zip or tar archive into dest, refusing members that escape it, links in zips, and
    more than max_bytes unpacked."""
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                members = [(info.filename, info.file_size) for info in zf.infolist()]
                check_members(archive, dest, members, max_bytes)
                zf.extractall(dest)
        else:
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                check_members(archive, dest, [(m.name, m.size) for m in members], max_bytes)
                tf.extractall(dest, filter="data")  # also refuses links out of dest and device files
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as err:
        raise StageError(f"{archive}: cannot be unpacked ({err}); delete it and run again") from None


def check_members(archive, dest: Path, members, max_bytes):
    root = dest.resolve()
    for name, _ in members:
        target = (root / name).resolve()
        if target != root and root not in target.parents:
            raise StageError(f"{archive}: member {name!r} would be written outside {dest}; refusing the archive")
    total = sum(size for _, size in members)
    if total > max_bytes:
        raise StageError(f"{archive}: unpacks to {total:,} bytes, over the {max_bytes:,}-byte limit")
