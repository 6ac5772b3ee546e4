"""Child process for the crash-safety test: writes versions until it is killed.

Usage: python crash_writer.py DB KEYFILE SEED. Prints ``ready`` once unsealed,
then one line ``<path> <version> <sha256 of value JSON>`` after every write
*returned* (flushed at once), so the parent knows which writes were acknowledged.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import threading

from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore


def main() -> None:
    db, seed = sys.argv[1], int(sys.argv[3])
    store = SecretStore(SqliteStorage(db))
    store.auto_unseal()
    build = store.catalog.category("auth").build
    lock = threading.Lock()
    print("ready", flush=True)

    def write(worker: int) -> None:
        rng = random.Random(seed * 10 + worker)
        while True:
            path = f"medessence/production/auth/svc-{seed}-{rng.randrange(8)}"
            value = build({}, development=False)
            info = store.secrets.put(path, value)
            digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
            with lock:
                sys.stdout.write(f"{path} {info.number} {digest}\n")
                sys.stdout.flush()

    threads = [threading.Thread(target=write, args=(n,), daemon=True) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
