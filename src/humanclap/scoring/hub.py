"""Where a model comes from: a local folder or a Hugging Face Hub id, and whether the Hub
can be reached. Import-light (stdlib only), so usage checks answer before torch loads."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")  # "owner/name"


def is_local_path(id_or_dir: str) -> bool:
    """True for an existing path, or anything that cannot be a hub id ("owner/name").

    An existing folder wins over a hub id of the same spelling, so ``./laion/clap`` saved
    with ``save_pretrained`` is loaded from disk, never fetched."""
    return Path(id_or_dir).exists() or not HUB_ID.match(id_or_dir)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Quick TCP probe of the Hub (``HF_ENDPOINT`` or huggingface.co), so an offline
    machine fails in seconds instead of after minutes of the hub client's retries.
    ``HF_HUB_OFFLINE=1`` counts as unreachable."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False
